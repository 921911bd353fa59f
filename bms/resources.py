"""Resources as the API shows them, their listing, and managers' rule edits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from bms.availability import bump_stamp
from bms.context import ResourceCtx, can_see, load_many, load_resource, manages, visible_resource
from bms.models import Resource
from config.site import Rules, merge_rules
from core import audit
from core.auth import Principal
from core.errors import Forbidden, NotFound
from core.models import Venue

__all__ = ["ResourcePublic", "listing", "public", "update_rules", "venue_contexts"]


class ResourcePublic(BaseModel):
    key: str
    name: str
    names: dict[str, str] = Field(default_factory=dict, description="the name per language, if the site file has it")
    kind: str
    venue: str
    site: str
    timezone: str
    capacity: int
    units: list[str]
    pool_strategy: str | None
    quota_group: str | None
    rules: dict[str, Any]
    access: dict[str, Any]


def public(ctx: ResourceCtx) -> ResourcePublic:
    """The resource with its effective rules (site defaults, then venue, then its own)."""
    effective = merge_rules(ctx.site.defaults, ctx.venue.rules, ctx.resource.rules)
    return ResourcePublic(
        key=ctx.resource.key,
        name=ctx.resource.name,
        names=ctx.resource.names,
        kind=ctx.resource.kind,
        venue=ctx.venue.key,
        site=ctx.site.key,
        timezone=ctx.site.timezone,
        capacity=ctx.resource.capacity,
        units=[u.key for u in ctx.units],
        pool_strategy=ctx.resource.pool_strategy,
        quota_group=ctx.resource.quota_group,
        rules=effective.model_dump(mode="json", exclude_none=True),
        access=ctx.resource.access,
    )


def listing(session: Session, principal: Principal, venue: str | None = None) -> list[ResourcePublic]:
    """Active resources the caller may see, by key, in a constant number of queries."""
    stmt = select(Resource).where(Resource.active).order_by(col(Resource.key))
    if venue:
        stmt = stmt.join(Venue, col(Venue.id) == Resource.venue_id).where(col(Venue.key) == venue)
    ctxs = load_many(session, list(session.exec(stmt).all()))
    return [public(c) for c in ctxs if can_see(principal, c)]


def venue_contexts(session: Session, principal: Principal, key: str) -> list[ResourceCtx]:
    """The venue's active resources the caller may see; 404 when there is none (or no such venue)."""
    venue = session.exec(select(Venue).where(col(Venue.key) == key)).first()
    if venue is None:
        raise NotFound("venue_not_found", f"no venue {key!r}")
    resources = session.exec(
        select(Resource).where(col(Resource.venue_id) == venue.id, Resource.active).order_by(col(Resource.key))
    ).all()
    ctxs = [c for c in load_many(session, list(resources)) if can_see(principal, c)]
    if not ctxs:
        raise NotFound("venue_not_found", f"no venue {key!r}")
    return ctxs


def update_rules(session: Session, principal: Principal, key: str, data: Rules) -> ResourcePublic:
    """Managers of the venue override rules of this resource; a field set to null falls back to
    the venue and site defaults. Applies to new requests and changes only."""
    ctx = visible_resource(session, principal, key)
    if not manages(principal, ctx):
        raise Forbidden("not_a_manager", "only managers of this venue change its rules")
    before = dict(ctx.resource.rules)
    merged = {**before, **data.model_dump(mode="json", exclude_unset=True)}
    ctx.resource.rules = {k: v for k, v in merged.items() if v is not None}
    merge_rules(ctx.site.defaults, ctx.venue.rules, ctx.resource.rules)  # still consistent as a whole
    session.add(ctx.resource)
    bump_stamp(session)  # nodes' cached contexts are stale from the commit
    audit.record(
        session,
        principal.actor,
        "resource.rules",
        "resource",
        ctx.resource.key,
        before=before,
        after=ctx.resource.rules,
    )
    session.flush()
    return public(load_resource(session, key))
