"""The `rules` moderation policy: conditions set by a venue's managers, and where they are applied.

Design. bms may not import moderation, so bms offers an extension point
(`bms.service.register_status_policy`) and the composition root plugs `decide` into it: a `rules`
request is confirmed, before it is placed and written, when it is inside the conditions and there is
room; else it waits for a manager with the reason. The creator's answer, the outbox message and the
audit row all see the final status. Without the policy registered, `rules` requests wait for a manager.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from bms.context import ResourceCtx
from bms.models import Reservation
from bms.rules import EffectiveRules
from bms.service import Draft, holding_overlaps, peak_places
from bms.states import Status
from config.site import WEEKDAYS, Moderation, parse_time_range
from core.models import Role, RoleGrant
from moderation.models import ModerationPolicy


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
            col(ModerationPolicy.scope).in_([scope_of(ctx.venue.id, ctx.resource.id), scope_of(ctx.venue.id, None)])  # type: ignore[arg-type]
        )
    ).all()
    by_scope = {r.scope: r for r in rows}
    for scope in (scope_of(ctx.venue.id, ctx.resource.id), scope_of(ctx.venue.id, None)):  # type: ignore[arg-type]
        if scope in by_scope:
            return Conditions.model_validate(by_scope[scope].conditions), scope
    return Conditions(), "none"


def is_resident(session: Session, user_id: int, site_id: int) -> bool:
    return (
        session.exec(
            select(RoleGrant.id).where(
                RoleGrant.user_id == user_id, RoleGrant.role == Role.resident.value, RoleGrant.site_id == site_id
            )
        ).first()
        is not None
    )


def slot_has_room(session: Session, ctx: ResourceCtx, start: datetime, end: datetime, places: int) -> bool:
    """Whether some unit (or enough places) is free now; the placement itself still decides for sure."""
    block_end = end + ctx.rules.buffer
    others = holding_overlaps(session, [u.id for u in ctx.units], start, block_end)  # type: ignore[misc]
    if ctx.exclusive:
        return len({o.unit_id for o in others}) < len(ctx.units)
    return peak_places(others, start, block_end) + places <= ctx.resource.capacity


AUTO_REASON = "approved automatically: within the moderation rules"


def decide(session: Session, draft: Draft, now: datetime) -> tuple[Status, str]:
    """The `rules` policy, registered with bms at composition time (bookgate.app): confirmed when
    the request is inside the managers' conditions and there is room, else pending with the reason."""
    ctx = draft.ctx
    cond, _ = conditions_for(session, ctx)
    resident = not cond.residents_only or is_resident(session, draft.planner.id, ctx.site.id)  # type: ignore[arg-type]
    failed = evaluate(cond, ctx.site.timezone, draft.start, draft.end, now, resident=resident)
    if failed:
        return Status.pending, "waiting for a manager: outside " + ", ".join(failed)
    with session.no_autoflush:
        if not slot_has_room(session, ctx, draft.start, draft.end, draft.places):
            return Status.pending, "waiting for a manager: the slot is taken"
    return Status.confirmed, AUTO_REASON


def hold_changes(session: Session, ctx: ResourceCtx, r: Reservation) -> bool:
    """The change policy registered with bms: re-approval, where the venue asks for it."""
    if ctx.rules.moderation not in (Moderation.manual, Moderation.rules):
        return False
    cond, _ = conditions_for(session, ctx)
    return cond.reapprove_changes
