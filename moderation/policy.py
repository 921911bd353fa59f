"""The `rules` moderation policy: conditions set by a venue's managers, and where they are applied.

Design. bms may not import moderation, so bms takes a `BookingPolicies` object and the composition
root builds it with `decide` (and `hold_changes`): a `rules` request is confirmed, before it is placed
and written, when it is inside the conditions and there is room; else it waits for a manager with the
reason. The creator's answer, the outbox message and the audit row all see the final status. Without
the policy passed in, `rules` requests wait for a manager.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from bms.booking import Draft, EffectiveRules, ResourceCtx, has_room
from bms.models import Reservation
from bms.states import Status
from config.site import WEEKDAYS, Moderation, parse_time_range
from core import audit
from core.auth import Principal
from core.db import ident, utcnow
from core.models import Role, RoleGrant, Venue
from moderation.models import ModerationPolicy
from moderation.scope import managed_resource, managed_venue


class Conditions(BaseModel):
    """All set conditions must hold for a request to be approved without a manager."""

    model_config = ConfigDict(extra="forbid")
    opening_hours: dict[str, list[str]] | None = Field(
        default=None, description="local ranges per weekday, e.g. {'mon': ['08:00-20:00']}; a missing day is closed"
    )
    max_minutes: int | None = Field(default=None, ge=5, description="at most this long")
    max_days_ahead: int | None = Field(default=None, ge=0, description="starting at most this many days ahead")
    residents_only: bool = Field(default=False, description="the requester is a resident of the site")
    reapprove_changes: bool = Field(
        default=False,
        description="on manual/rules resources, a resident's reschedule of a confirmed booking waits for a "
        "manager while the booking keeps its original slot",
    )

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for day, ranges in (v or {}).items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
            for r in ranges:
                parse_time_range(r)
        return v


def evaluate(cond: Conditions, tz: str, start: datetime, end: datetime, now: datetime, *, resident: bool) -> list[str]:
    """The names of the conditions the request breaks; empty means inside the policy."""
    failed = []
    if cond.opening_hours is not None:
        hours = EffectiveRules.build(tz, {}, {}, {"opening_hours": cond.opening_hours}, {})
        if not hours.within_opening(start, end):
            failed.append("opening_hours")
    if cond.max_minutes is not None and end - start > timedelta(minutes=cond.max_minutes):
        failed.append("max_minutes")
    if cond.max_days_ahead is not None and start - now > timedelta(days=cond.max_days_ahead):
        failed.append("max_days_ahead")
    if cond.residents_only and not resident:
        failed.append("residents_only")
    return failed


def scope_of(venue_id: int, resource_id: int | None) -> str:
    return f"resource:{resource_id}" if resource_id is not None else f"venue:{venue_id}"


def conditions_for(session: Session, ctx: ResourceCtx) -> tuple[Conditions, str]:
    """The resource's own row, else its venue's, else no condition; and where it came from."""
    rows = session.exec(
        select(ModerationPolicy).where(
            col(ModerationPolicy.scope).in_(
                [scope_of(ident(ctx.venue), ident(ctx.resource)), scope_of(ident(ctx.venue), None)]
            )
        )
    ).all()
    by_scope = {r.scope: r for r in rows}
    for scope in (scope_of(ident(ctx.venue), ident(ctx.resource)), scope_of(ident(ctx.venue), None)):
        if scope in by_scope:
            return Conditions.model_validate(by_scope[scope].conditions), scope
    return Conditions(), "none"


def is_resident(session: Session, user_id: int, site_id: int) -> bool:
    return (
        session.exec(
            select(RoleGrant.id).where(
                col(RoleGrant.user_id) == user_id,
                col(RoleGrant.role) == Role.resident.value,
                col(RoleGrant.site_id) == site_id,
            )
        ).first()
        is not None
    )


AUTO_REASON = "approved automatically: within the moderation rules"


def decide(session: Session, draft: Draft, now: datetime) -> tuple[Status, str]:
    """The `rules` status policy, given to bms at composition time (bookgate.app): confirmed when
    the request is inside the managers' conditions and there is room, else pending with the reason."""
    ctx = draft.ctx
    cond, _ = conditions_for(session, ctx)
    resident = not cond.residents_only or is_resident(session, ident(draft.planner), ident(ctx.site))
    failed = evaluate(cond, ctx.site.timezone, draft.start, draft.end, now, resident=resident)
    if failed:
        return Status.pending, "waiting for a manager: outside " + ", ".join(failed)
    with session.no_autoflush:
        if not has_room(session, ctx, draft.start, draft.end, draft.places):
            return Status.pending, "waiting for a manager: the slot is taken"
    return Status.confirmed, AUTO_REASON


def hold_changes(session: Session, ctx: ResourceCtx, r: Reservation) -> bool:
    """The change policy given to bms: re-approval, where the venue asks for it."""
    if ctx.rules.moderation not in (Moderation.manual, Moderation.rules):
        return False
    cond, _ = conditions_for(session, ctx)
    return cond.reapprove_changes


# ---------------------------------------------------------------- reading and editing policies


class PolicyPublic(BaseModel):
    scope: str
    venue: str
    resource: str | None
    moderation: str | None = None
    conditions: Conditions
    applies: str = "new requests only; pending ones keep their state"


def _save(session: Session, principal: Principal, venue: Venue, resource_id: int | None, cond: Conditions) -> None:
    scope = scope_of(ident(venue), resource_id)
    row = session.exec(select(ModerationPolicy).where(col(ModerationPolicy.scope) == scope)).first()
    before = row.conditions if row else None
    row = row or ModerationPolicy(scope=scope, venue_id=ident(venue), resource_id=resource_id)
    row.conditions = cond.model_dump(mode="json", exclude_defaults=True)
    row.updated_at = utcnow()
    row.updated_by = principal.user_id
    session.add(row)
    session.flush()
    audit.record(
        session, principal.actor, "moderation.policy", "moderation_policy", scope, before=before, after=row.conditions
    )


def venue_policy(session: Session, principal: Principal, venue_key: str) -> PolicyPublic:
    """The venue's conditions, for the caller's venues only."""
    venue = managed_venue(session, principal, venue_key)
    row = session.exec(
        select(ModerationPolicy).where(col(ModerationPolicy.scope) == scope_of(ident(venue), None))
    ).first()
    cond = Conditions.model_validate(row.conditions) if row else Conditions()
    return PolicyPublic(scope="venue", venue=venue.key, resource=None, conditions=cond)


def set_venue_policy(session: Session, principal: Principal, venue_key: str, cond: Conditions) -> PolicyPublic:
    """Conditions for every resource of the venue without its own; audited."""
    venue = managed_venue(session, principal, venue_key)
    _save(session, principal, venue, None, cond)
    return PolicyPublic(scope="venue", venue=venue.key, resource=None, conditions=cond)


def resource_policy(session: Session, principal: Principal, resource_key: str) -> PolicyPublic:
    """The conditions in force for this resource: its own, else its venue's."""
    ctx = managed_resource(session, principal, resource_key)
    cond, scope = conditions_for(session, ctx)
    return PolicyPublic(
        scope=scope.split(":")[0],
        venue=ctx.venue.key,
        resource=ctx.resource.key,
        moderation=ctx.rules.moderation.value,
        conditions=cond,
    )


def set_resource_policy(session: Session, principal: Principal, resource_key: str, cond: Conditions) -> PolicyPublic:
    """This resource's own conditions, replacing its venue's as a whole; audited."""
    ctx = managed_resource(session, principal, resource_key)
    _save(session, principal, ctx.venue, ctx.resource.id, cond)
    return PolicyPublic(
        scope="resource",
        venue=ctx.venue.key,
        resource=ctx.resource.key,
        moderation=ctx.rules.moderation.value,
        conditions=cond,
    )
