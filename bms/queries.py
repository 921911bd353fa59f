"""Reading reservations: who may see one, listings, and the public shape (`public`, `public_many`).

`public_many` shapes a whole list in a constant number of queries (contexts, units, beneficiaries,
pending changes), whatever its length: every list endpoint goes through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import union
from sqlmodel import Session, col, select

from bms.context import ResourceCtx, load_by_ids, load_resource_by_id, manages
from bms.models import Reservation, ReservationBeneficiary, ReservationChange, Resource, ResourceUnit
from bms.states import Status
from core.auth import Principal
from core.db import ident
from core.errors import Forbidden, Invalid, NotFound
from core.models import Venue

__all__ = [
    "PendingChange",
    "ReservationPublic",
    "get_visible",
    "list_for",
    "pending_change",
    "public",
    "public_many",
    "visible",
]


class PendingChange(BaseModel):
    """A reschedule of a confirmed booking waiting for a manager; the booking keeps its slot."""

    id: int
    start: datetime
    end: datetime
    requested_at: datetime


class ReservationPublic(BaseModel):
    """A reservation as the API shows it: instants in UTC, and local times in the site's zone."""

    id: int
    resource: str
    unit: str
    planner_id: int
    beneficiaries: list[int]
    start: datetime
    end: datetime
    local_start: str
    local_end: str
    timezone: str
    access_start: datetime
    access_end: datetime
    places: int
    status: str
    status_reason: str | None
    note: str
    series_id: int | None
    occurrence_key: str | None
    detached: bool
    changes: int
    pending_change: PendingChange | None = None


def pending_change(session: Session, reservation_id: int) -> ReservationChange | None:
    """The change of this booking waiting for a manager, if any."""
    return session.exec(
        select(ReservationChange).where(
            col(ReservationChange.reservation_id) == reservation_id, col(ReservationChange.status) == "pending"
        )
    ).first()


def public(session: Session, r: Reservation, ctx: ResourceCtx | None = None) -> ReservationPublic:
    """One reservation as the API shows it."""
    return public_many(session, [r], ctx=ctx)[0]


def public_many(
    session: Session, reservations: Iterable[Reservation], *, ctx: ResourceCtx | None = None
) -> list[ReservationPublic]:
    """Reservations as the API shows them, in order, in at most six queries whatever their number.

    `ctx`, when the caller has it, is the context of (some of) them and saves loading it."""
    rows = list(reservations)
    if not rows:
        return []
    given: dict[int, ResourceCtx] = {ident(ctx.resource): ctx} if ctx is not None else {}
    ctxs = {**load_by_ids(session, {r.resource_id for r in rows} - given.keys()), **given}
    units = {u.id: u for c in ctxs.values() for u in c.units}
    retired = {r.unit_id for r in rows} - units.keys()
    if retired:  # units deactivated since: not in the contexts, still named on old bookings
        units |= {u.id: u for u in session.exec(select(ResourceUnit).where(col(ResourceUnit.id).in_(retired))).all()}
    ids = [r.id for r in rows]
    bens: dict[int, list[int]] = defaultdict(list)
    for rid, uid in session.exec(
        select(ReservationBeneficiary.reservation_id, ReservationBeneficiary.user_id).where(
            col(ReservationBeneficiary.reservation_id).in_(ids)
        )
    ).all():
        bens[rid].append(uid)
    held: dict[int, ReservationChange] = {}
    confirmed = [r.id for r in rows if r.status == Status.confirmed]
    if confirmed:
        for change in session.exec(
            select(ReservationChange)
            .where(col(ReservationChange.reservation_id).in_(confirmed), col(ReservationChange.status) == "pending")
            .order_by(col(ReservationChange.id))
        ).all():
            held.setdefault(change.reservation_id, change)
    return [_shape(r, ctxs[r.resource_id], units[r.unit_id], bens[ident(r)], held.get(ident(r))) for r in rows]


def _shape(
    r: Reservation, ctx: ResourceCtx, unit: ResourceUnit, bens: list[int], held: ReservationChange | None
) -> ReservationPublic:
    tz = ctx.rules.tz
    return ReservationPublic(
        id=r.id,
        resource=ctx.resource.key,
        unit=unit.key,
        planner_id=r.planner_id,
        beneficiaries=sorted(bens),
        start=r.start,
        end=r.end,
        local_start=r.start.astimezone(tz).isoformat(),
        local_end=r.end.astimezone(tz).isoformat(),
        timezone=ctx.site.timezone,
        access_start=r.access_start,
        access_end=r.access_end,
        places=r.places,
        status=r.status,
        status_reason=r.status_reason,
        note=r.note,
        series_id=r.series_id,
        occurrence_key=r.occurrence_key,
        detached=r.detached,
        changes=r.changes,
        pending_change=PendingChange(id=held.id, start=held.start, end=held.end, requested_at=held.created_at)
        if held
        else None,
    )


def visible(session: Session, principal: Principal, r: Reservation, ctx: ResourceCtx | None = None) -> bool:
    """Its planner, its beneficiaries, managers of its venue and admins see a reservation."""
    if r.planner_id == principal.user_id or principal.admin:
        return True
    ctx = ctx or load_resource_by_id(session, r.resource_id)
    if manages(principal, ctx):
        return True
    return session.get(ReservationBeneficiary, (r.id, principal.user_id)) is not None


def get_visible(session: Session, principal: Principal, reservation_id: int) -> tuple[Reservation, ResourceCtx]:
    """404 for both 'does not exist' and 'not yours': existence is not leaked."""
    r = session.get(Reservation, reservation_id)
    if r is None:
        raise NotFound("reservation_not_found", f"no reservation {reservation_id}")
    ctx = load_resource_by_id(session, r.resource_id)
    if not visible(session, principal, r, ctx):
        raise NotFound("reservation_not_found", f"no reservation {reservation_id}")
    return r, ctx


def list_for(
    session: Session,
    principal: Principal,
    *,
    scope: str = "mine",
    resource: str | None = None,
    status: list[str] | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Reservation]:
    """`mine`: planned by the caller or naming them; `managed`: of the venues they manage."""
    stmt = select(Reservation)
    if scope == "mine":
        # A UNION of two indexed lookups: `planner = me OR id IN (...)` reads the whole table.
        ids: Any = union(
            select(Reservation.id).where(col(Reservation.planner_id) == principal.user_id),
            select(ReservationBeneficiary.reservation_id).where(
                col(ReservationBeneficiary.user_id) == principal.user_id
            ),
        )
        stmt = stmt.where(col(Reservation.id).in_(ids))
    elif scope == "managed":
        if not principal.admin:
            venue_ids = list(principal.managed_venues)
            if not venue_ids:
                raise Forbidden("forbidden_role", "scope=managed is for venue managers")
            res_ids = (
                select(Resource.id).join(Venue, col(Venue.id) == Resource.venue_id).where(col(Venue.id).in_(venue_ids))
            )
            stmt = stmt.where(col(Reservation.resource_id).in_(res_ids))
    else:
        raise Invalid("bad_scope", "scope is mine or managed", field="scope")
    if resource:
        rid = session.exec(select(Resource.id).where(col(Resource.key) == resource)).first()
        if rid is None:
            raise NotFound("resource_not_found", f"no resource {resource!r}", field="resource")
        stmt = stmt.where(col(Reservation.resource_id) == rid)
    if status:
        bad = [s for s in status if s not in Status.__members__]
        if bad:
            raise Invalid("bad_status", f"unknown status {bad[0]!r}", field="status")
        stmt = stmt.where(col(Reservation.status).in_(status))
    if start_from is not None:
        stmt = stmt.where(col(Reservation.end) > start_from)
    if start_to is not None:
        stmt = stmt.where(col(Reservation.start) < start_to)
    return list(
        session.exec(stmt.order_by(col(Reservation.start), col(Reservation.id)).offset(offset).limit(limit)).all()
    )
