"""Bookable slots for calendar views: one range query per call, whatever the number of resources.

A slot is `free` (nothing booked), `limited` (some units or places left) or `full`; `pending`
counts the requests waiting for a manager on it. Slots follow the resource's grid in the
site's zone and skip closed hours and blackouts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from pydantic import BaseModel
from sqlmodel import Session, col, select

from bms.context import ResourceCtx
from bms.models import Reservation
from bms.service import peak_places
from bms.states import HOLDING, Status
from bookgate.errors import Invalid
from config.site import MAX_BOOKING_MINUTES

MAX_RANGE = timedelta(days=31)
# Bookings never last longer than this, so a bounded range scan finds every overlap.
LOOKBACK = timedelta(minutes=MAX_BOOKING_MINUTES) + timedelta(days=1)


class Slot(BaseModel):
    start: datetime
    end: datetime
    local_start: str
    status: str
    available: int
    pending: int = 0


class ResourceAvailability(BaseModel):
    resource: str
    timezone: str
    capacity: int
    units: int
    slots: list[Slot]


@dataclass
class _Booked:
    unit_id: int
    block_start: datetime
    block_end: datetime
    places: int
    status: str


def _slots_for(ctx: ResourceCtx, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    rules = ctx.rules
    tz = rules.tz
    out: list[tuple[datetime, datetime]] = []
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    step = rules.slot
    while day <= last:
        for open_t, close_t in rules.opening.get(day.weekday(), []):
            lo = datetime.combine(day, open_t, tz)
            hi = (
                datetime.combine(day + timedelta(days=1), time.min, tz)
                if close_t == time.max
                else datetime.combine(day, close_t, tz)
            )
            # Walk the grid in UTC from the local opening: DST days have their real length.
            t = lo.astimezone(start.tzinfo)
            hi_utc = hi.astimezone(start.tzinfo)
            while t + step <= hi_utc:
                if t >= start and t + step <= end and rules.blackout_hit(t, t + step) is None:
                    out.append((t, t + step))
                t += step
        day += timedelta(days=1)
    return sorted(set(out))


def _fetch(session: Session, resource_ids: list[int], start: datetime, end: datetime) -> dict[int, list[_Booked]]:
    rows = session.exec(
        select(
            Reservation.resource_id,
            Reservation.unit_id,
            Reservation.block_start,
            Reservation.block_end,
            Reservation.places,
            Reservation.status,
        ).where(
            col(Reservation.resource_id).in_(resource_ids),
            col(Reservation.status).in_([s.value for s in (*HOLDING, Status.pending)]),
            Reservation.block_start < end,
            Reservation.block_start > start - LOOKBACK,
            Reservation.block_end > start,
        )
    ).all()
    out: dict[int, list[_Booked]] = defaultdict(list)
    for rid, uid, bs, be, places, status in rows:
        out[rid].append(_Booked(uid, bs, be, places, status))
    return out


def _evaluate(ctx: ResourceCtx, booked: list[_Booked], slots: list[tuple[datetime, datetime]]) -> list[Slot]:
    tz = ctx.rules.tz
    buffer = ctx.rules.buffer
    holding = sorted((b for b in booked if b.status != Status.pending), key=lambda b: b.block_start)
    pending = [b for b in booked if b.status == Status.pending]
    n_units = len(ctx.units)
    cap = ctx.resource.capacity
    out = []
    for s, e in slots:
        # A booking of this slot would block [s, e + buffer): that is what must be free.
        need_end = e + buffer
        hits = [b for b in holding if b.block_start < need_end and b.block_end > s]
        if ctx.exclusive:
            available = n_units - len({b.unit_id for b in hits})
            total = n_units
        else:
            available = cap - peak_places(hits, s, need_end)  # type: ignore[arg-type]
            total = cap
        status = "free" if available >= total else ("full" if available <= 0 else "limited")
        waiting = sum(1 for b in pending if b.block_start < e and b.block_end > s)
        out.append(
            Slot(
                start=s,
                end=e,
                local_start=s.astimezone(tz).isoformat(),
                status=status,
                available=max(0, available),
                pending=waiting,
            )
        )
    return out


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("timezone_aware", "give times with a UTC offset", field="from")
    if end <= start:
        raise Invalid("invalid_range", "'to' must be after 'from'", field="to")
    if end - start > MAX_RANGE:
        raise Invalid("range_too_long", f"at most {MAX_RANGE.days} days per query", field="to")


def resource_availability(session: Session, ctx: ResourceCtx, start: datetime, end: datetime) -> ResourceAvailability:
    _check_range(start, end)
    booked = _fetch(session, [ctx.resource.id], start, end + ctx.rules.buffer)  # type: ignore[list-item]
    slots = _evaluate(ctx, booked.get(ctx.resource.id, []), _slots_for(ctx, start, end))  # type: ignore[arg-type]
    return ResourceAvailability(
        resource=ctx.resource.key,
        timezone=ctx.site.timezone,
        capacity=ctx.resource.capacity,
        units=len(ctx.units),
        slots=slots,
    )


def venue_availability(session: Session, ctxs: list[ResourceCtx], day: date) -> list[ResourceAvailability]:
    if not ctxs:
        return []
    tz = ctxs[0].rules.tz
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tz)
    max_buffer = max(c.rules.buffer for c in ctxs)
    booked = _fetch(session, [c.resource.id for c in ctxs], start, end + max_buffer)  # type: ignore[misc]
    return [
        ResourceAvailability(
            resource=c.resource.key,
            timezone=c.site.timezone,
            capacity=c.resource.capacity,
            units=len(c.units),
            slots=_evaluate(c, booked.get(c.resource.id, []), _slots_for(c, start, end)),  # type: ignore[arg-type]
        )
        for c in ctxs
    ]
