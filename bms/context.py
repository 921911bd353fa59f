"""Loading a resource with its venue, site, units and effective rules; who may do what with it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from bms.models import Resource, ResourceUnit
from bms.rules import EffectiveRules
from core.auth import Principal
from core.db import ident
from core.errors import Forbidden, NotFound
from core.models import Site, Venue


@dataclass
class ResourceCtx:
    """A resource with its venue, site, active units (in allocation order) and effective rules."""

    resource: Resource
    venue: Venue
    site: Site
    units: list[ResourceUnit]
    rules: EffectiveRules

    @property
    def is_pool(self) -> bool:
        return len(self.units) > 1

    @property
    def exclusive(self) -> bool:
        return self.resource.capacity == 1


def _ctx_query(condition: Any) -> Any:
    return (
        select(Resource, Venue, Site, ResourceUnit)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .join(Site, col(Site.id) == Venue.site_id)
        .outerjoin(ResourceUnit, (col(ResourceUnit.resource_id) == Resource.id) & col(ResourceUnit.active))
        .where(condition)
        .order_by(col(ResourceUnit.position), col(ResourceUnit.id))
    )


# Built once: a booking's first read, with its parameter bound per call.
_BY_KEY = _ctx_query((col(Resource.key) == bindparam("key")) & col(Resource.active))
_BY_ID = _ctx_query(col(Resource.id) == bindparam("rid"))


def _load(session: Session, stmt: Any, params: dict[str, Any]) -> ResourceCtx | None:
    """Resource, venue, site and active units in one query; cached for the session."""
    rows = session.exec(stmt, params=params).all()
    if not rows:
        return None
    resource, venue, site, _ = rows[0]
    units = [unit for *_, unit in rows if unit is not None]
    rules = EffectiveRules.build(site.timezone, site.defaults, venue.rules, resource.rules, resource.access)
    ctx = ResourceCtx(resource, venue, site, list(units), rules)
    session.info.setdefault(_CACHE, {})[resource.id] = ctx
    return ctx


_CACHE = "bms.resource_ctx"


def load_many(session: Session, resources: list[Resource]) -> list[ResourceCtx]:
    """Contexts for many resources in three queries, whatever their number."""
    if not resources:
        return []
    venue_ids = {r.venue_id for r in resources}
    venues = {v.id: v for v in session.exec(select(Venue).where(col(Venue.id).in_(venue_ids))).all()}
    sites = {
        s.id: s for s in session.exec(select(Site).where(col(Site.id).in_({v.site_id for v in venues.values()}))).all()
    }
    units: dict[int, list[ResourceUnit]] = {ident(r): [] for r in resources}
    for u in session.exec(
        select(ResourceUnit)
        .where(col(ResourceUnit.resource_id).in_(list(units)), ResourceUnit.active)
        .order_by(col(ResourceUnit.position), col(ResourceUnit.id))
    ).all():
        units[u.resource_id].append(u)
    out = []
    for r in resources:
        venue = venues[r.venue_id]
        site = sites[venue.site_id]
        rules = EffectiveRules.build(site.timezone, site.defaults, venue.rules, r.rules, r.access)
        out.append(ResourceCtx(r, venue, site, units[ident(r)], rules))
    return out


def load_by_ids(session: Session, resource_ids: Iterable[int]) -> dict[int, ResourceCtx]:
    """Contexts by resource id: from the session's cache, the rest in four queries at most."""
    cache: dict[int, ResourceCtx] = session.info.setdefault(_CACHE, {})
    wanted = set(resource_ids)
    missing = sorted(wanted - cache.keys())
    if missing:
        resources = list(session.exec(select(Resource).where(col(Resource.id).in_(missing))).all())
        for ctx in load_many(session, resources):
            cache[ident(ctx.resource)] = ctx
    found = {i: cache[i] for i in wanted if i in cache}
    if len(found) < len(wanted):
        gone = min(wanted - found.keys())
        raise NotFound("resource_not_found", f"no resource {gone}")
    return found


def load_resource(session: Session, key: str) -> ResourceCtx:
    """Always read afresh (rule edits go through here), then cached for load_resource_by_id."""
    ctx = _load(session, _BY_KEY, {"key": key})
    if ctx is None:
        raise NotFound("resource_not_found", f"no resource {key!r}", field="resource")
    return ctx


def load_resource_by_id(session: Session, resource_id: int) -> ResourceCtx:
    """The context of a resource, active or not; cached for the session."""
    cached = session.info.get(_CACHE, {}).get(resource_id)
    if cached is not None:
        return cached
    ctx = _load(session, _BY_ID, {"rid": resource_id})
    if ctx is None:
        raise NotFound("resource_not_found", f"no resource {resource_id}")
    return ctx


def manages(principal: Principal, ctx: ResourceCtx) -> bool:
    """Whether the caller manages the resource's venue (admins manage every venue)."""
    return principal.manages_venue(ident(ctx.venue))


def can_see(principal: Principal, ctx: ResourceCtx) -> bool:
    """Managers of its venue, and residents and reception staff of its site, see a resource."""
    return (
        manages(principal, ctx) or ctx.site.id in principal.resident_sites or ctx.site.id in principal.reception_sites
    )


def visible_resource(session: Session, principal: Principal, key: str) -> ResourceCtx:
    """A resource the caller may see; 404 otherwise, so keys of other sites do not leak."""
    ctx = load_resource(session, key)
    if not can_see(principal, ctx):
        raise NotFound("resource_not_found", f"no resource {key!r}", field="resource")
    return ctx


def require_can_book(principal: Principal, ctx: ResourceCtx) -> None:
    if manages(principal, ctx):
        return
    if ctx.site.id not in principal.resident_sites:
        raise Forbidden("not_a_resident", "only residents of this site and its managers book here")
    if not ctx.rules.self_service:
        raise Forbidden("self_service_disabled", "this resource is booked by its managers only")
