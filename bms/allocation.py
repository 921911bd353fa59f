"""Placing a booking on a unit of its resource: overlaps, capacity, and the no-double-booking guarantee.

No double booking is enforced by the database. PostgreSQL: an exclusion constraint over
(unit, block range) for holding statuses, so two racing inserts cannot both commit; the
check below only produces a friendly answer. SQLite: write transactions begin IMMEDIATE, so
the check and the insert run under the single writer lock. Capacity units are locked
(`FOR UPDATE`) before their places are counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, inspect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from bms.context import ResourceCtx
from bms.holds import check_not_held
from bms.models import Reservation, ResourceUnit
from bms.states import HOLDING
from core.db import ident, is_sqlite
from core.errors import Conflict

__all__ = ["fits", "has_room", "holding_overlaps", "peak_places", "place", "slot_taken"]


def holding_overlaps(
    session: Session,
    unit_ids: Iterable[int],
    block_start: datetime,
    block_end: datetime,
    exclude_id: int | None = None,
) -> list[Reservation]:
    """Bookings that hold a slot on these units and overlap the block (buffers included)."""
    params = {"units": list(unit_ids), "block_start": block_start, "block_end": block_end}
    if exclude_id is None:
        return list(session.exec(_OVERLAPS, params=params).all())
    return list(session.exec(_OVERLAPS_BUT, params={**params, "exclude": exclude_id}).all())


# Built once (parameters bound per call): the check before every placement.
_OVERLAPS = select(Reservation).where(
    col(Reservation.unit_id).in_(bindparam("units", expanding=True)),
    col(Reservation.status).in_([s.value for s in HOLDING]),
    col(Reservation.block_start) < bindparam("block_end"),
    col(Reservation.block_end) > bindparam("block_start"),
)
_OVERLAPS_BUT = _OVERLAPS.where(col(Reservation.id) != bindparam("exclude"))


def peak_places(bookings: Iterable[Reservation], start: datetime, end: datetime) -> int:
    """The most places in use at any instant of [start, end)."""
    edges: list[tuple[datetime, int]] = []
    for b in bookings:
        a, z = max(b.block_start, start), min(b.block_end, end)
        if a < z:
            edges += [(a, b.places), (z, -b.places)]
    peak = used = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        used += delta
        peak = max(peak, used)
    return peak


def slot_taken(conflict: Reservation | None, **extra: Any) -> Conflict:
    """The 409 of a slot that is not free, naming the first booking in the way when there is one."""
    window = {"start": conflict.start.isoformat(), "end": conflict.end.isoformat()} if conflict else None
    return Conflict("slot_taken", "this time is already booked", conflicting_window=window, **extra)


def fits(session: Session, ctx: ResourceCtx, r: Reservation) -> bool:
    """Whether `r` (its block and places) would find a place on some unit of its resource now."""
    if ctx.exclusive:
        return any(not holding_overlaps(session, [ident(u)], r.block_start, r.block_end, r.id) for u in ctx.units)
    unit = ctx.units[0]
    others = holding_overlaps(session, [ident(unit)], r.block_start, r.block_end, r.id)
    return peak_places(others, r.block_start, r.block_end) + r.places <= ctx.resource.capacity


def has_room(session: Session, ctx: ResourceCtx, start: datetime, end: datetime, places: int) -> bool:
    """Whether some unit (or enough places) is free for a new booking of [start, end) now, in one
    query; only `place` decides for sure."""
    block_end = end + ctx.rules.buffer
    others = holding_overlaps(session, [ident(u) for u in ctx.units], start, block_end)
    if ctx.exclusive:
        return len({o.unit_id for o in others}) < len(ctx.units)
    return peak_places(others, start, block_end) + places <= ctx.resource.capacity


def _unit_order(session: Session, ctx: ResourceCtx, start: datetime, prefer: int | None) -> list[ResourceUnit]:
    units = list(ctx.units)
    if ctx.resource.pool_strategy == "balancing" and len(units) > 1:
        horizon = timedelta(days=30)
        rows = session.exec(
            select(Reservation.unit_id, func.count())
            .where(
                col(Reservation.unit_id).in_([u.id for u in units]),
                col(Reservation.status).in_([s.value for s in HOLDING]),
                col(Reservation.start) > start - horizon,
                col(Reservation.start) < start + horizon,
            )
            .group_by(col(Reservation.unit_id))
        ).all()
        use = dict(rows)
        units.sort(key=lambda u: (use.get(ident(u), 0), u.position, ident(u)))
    if prefer is not None:
        units.sort(key=lambda u: u.id != prefer)
    return units


def _is_exclusion_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23P01"


# PostgreSQL: two inserts racing for one unit may each wait for the other's tentative row while
# checking the exclusion constraint; one is chosen as the deadlock victim (40P01). A
# serialization failure (40001) says the same: another transaction got there first.
LOST_RACE = frozenset({"40P01", "40001"})


def _lost_race(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in LOST_RACE


_INTENT = (
    "start",
    "end",
    "block_start",
    "block_end",
    "long_span",
    "access_start",
    "access_end",
    "places",
    "status",
    "updated_at",
)


_RESERVATION = Reservation.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(c.key for c in _RESERVATION.columns if c.key != "id")
_INSERT = insert(_RESERVATION).returning(_RESERVATION.c.id)


def _write(session: Session, r: Reservation) -> None:
    """Write `r`: a new booking in one INSERT, then attached to the session as persistent (no
    unit-of-work pass); a booking already in the session by a flush."""
    if not inspect(r).transient:
        session.add(r)
        session.flush()
        return
    r.id = session.execute(_INSERT, {k: getattr(r, k) for k in _COLUMNS}).scalar_one()
    make_transient_to_detached(r)
    session.add(r)


def place(
    session: Session,
    ctx: ResourceCtx,
    r: Reservation,
    *,
    prefer_unit: int | None = None,
    refusal_rolls_back: bool = False,
) -> None:
    """Assign `r` a unit and flush it, or raise 409 slot_taken. `r.block_*` must be set.

    `refusal_rolls_back`: the caller rolls back its transaction (or a savepoint around this call)
    on a refusal, so on PostgreSQL the last unit tried needs no savepoint of its own."""
    # Explicit flushes only: an autoflush of a moved booking must not fire outside its savepoint.
    with session.no_autoflush:
        _place(session, ctx, r, prefer_unit, refusal_rolls_back)


def _place(
    session: Session, ctx: ResourceCtx, r: Reservation, prefer_unit: int | None, refusal_rolls_back: bool = False
) -> None:
    holding = r.status in HOLDING
    if not ctx.units:
        raise Conflict("no_units", "this resource has no active unit to book")
    check_not_held(session, ctx, r)  # a place an open waitlist offer holds (bms.holds)
    if not ctx.exclusive:
        unit = ctx.units[0]
        if holding:
            if not is_sqlite(session):
                try:
                    session.exec(select(ResourceUnit.id).where(col(ResourceUnit.id) == unit.id).with_for_update()).one()
                except DBAPIError as exc:
                    if not _lost_race(exc):
                        raise
                    raise slot_taken(None) from None  # the transaction is lost: the refusal rolls it back
            others = holding_overlaps(session, [ident(unit)], r.block_start, r.block_end, r.id)
            used = peak_places(others, r.block_start, r.block_end)
            if used + r.places > ctx.resource.capacity:
                raise slot_taken(None, places_left=max(0, ctx.resource.capacity - used))
        r.unit_id = ident(unit)
        _write(session, r)
        return
    first_conflict: Reservation | None = None
    # A rolled-back savepoint expires (or expunges) `r`: keep what we meant to write.
    intent = {k: getattr(r, k) for k in _INTENT}
    units = _unit_order(session, ctx, r.start, prefer_unit)
    for n, unit in enumerate(units, 1):
        for k, v in intent.items():
            setattr(r, k, v)
        if holding:
            clash = holding_overlaps(session, [ident(unit)], r.block_start, r.block_end, r.id)
            if clash:
                first_conflict = first_conflict or min(clash, key=lambda c: c.start)
                continue
        r.unit_id = ident(unit)
        if is_sqlite(session):
            # The writer lock is held since BEGIN IMMEDIATE: the check above cannot go stale.
            _write(session, r)
            return
        if refusal_rolls_back and n == len(units):
            # Nothing to try after this unit: a lost race refuses, and the caller's rollback
            # clears the failed statement (two round trips fewer than a savepoint).
            try:
                _write(session, r)
            except IntegrityError as exc:
                if not _is_exclusion_violation(exc):
                    raise
                raise slot_taken(first_conflict) from None
            except DBAPIError as exc:
                if not _lost_race(exc):
                    raise
                raise slot_taken(first_conflict) from None
            return
        try:
            with session.begin_nested():
                _write(session, r)
            return
        except IntegrityError as exc:
            if not _is_exclusion_violation(exc):
                raise
            # A concurrent booking committed on this unit after our check: try the next one.
            continue
        except DBAPIError as exc:
            if not _lost_race(exc):
                raise
            # Deadlocked with another booking of this unit (the savepoint is rolled back, the
            # other goes on and takes it): this unit is not ours, try the next one.
            continue
    raise slot_taken(first_conflict)
