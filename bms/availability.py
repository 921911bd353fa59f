"""Bookable slots for calendar views: one range query per call, whatever the number of resources.

A slot is `free` (nothing booked), `limited` (some units or places left) or `full`; `pending`
counts the requests waiting for a manager on it. Slots follow the resource's grid in the
site's zone and skip closed hours and blackouts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from sqlalchemy import String, text, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from bms.allocation import peak_places
from bms.context import ResourceCtx
from bms.models import LONG_SPAN, Reservation
from bms.rules import EffectiveRules
from bms.states import HOLDING, Status
from core.db import ident, is_sqlite
from core.errors import Invalid

MAX_RANGE = timedelta(days=31)


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


def _slots_for(ctx: ResourceCtx, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, str], ...]:
    return _grid(ctx.rules, start, end)


@lru_cache(maxsize=2048)
def _grid(rules: EffectiveRules, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, str], ...]:
    """The bookable slots of a rule set over a range (shared by every resource with those rules)."""
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
    return tuple((a, z, a.astimezone(tz).isoformat()) for a, z in sorted(set(out)))


def _fetch(session: Session, resource_ids: list[int], start: datetime, end: datetime) -> dict[int, list[_Booked]]:
    sqlite = is_sqlite(session)
    # On SQLite the stored text is parsed with fromisoformat (C) rather than the generic type
    # processor: it is most of the cost of a venue-wide query.
    bs_col: Any = type_coerce(Reservation.block_start, String) if sqlite else col(Reservation.block_start)
    be_col: Any = type_coerce(Reservation.block_end, String) if sqlite else col(Reservation.block_end)
    base = sa_select(
        col(Reservation.resource_id),
        col(Reservation.unit_id),
        bs_col,
        be_col,
        col(Reservation.places),
        col(Reservation.status),
    ).where(
        col(Reservation.resource_id).in_(resource_ids),
        col(Reservation.status).in_([s.value for s in (*HOLDING, Status.pending)]),
        col(Reservation.block_start) < end,
        col(Reservation.block_end) > start,
    )
    conn = session.connection()  # Core, not ORM, execution: these are plain rows
    rows = list(conn.execute(base.where(col(Reservation.block_start) > start - LONG_SPAN)).all())
    # The bare column matches the partial index predicate, so the index of long bookings is used.
    rows += conn.execute(
        base.where(text("reservation.long_span"), col(Reservation.block_start) <= start - LONG_SPAN)
    ).all()
    out: dict[int, list[_Booked]] = defaultdict(list)
    parse = datetime.fromisoformat
    for rid, uid, bs, be, places, status in rows:
        if sqlite:
            bs, be = parse(bs).replace(tzinfo=UTC), parse(be).replace(tzinfo=UTC)
        out[rid].append(_Booked(uid, bs, be, places, status))
    return out


def _evaluate(ctx: ResourceCtx, booked: list[_Booked], slots: tuple[tuple[datetime, datetime, str], ...]) -> list[dict]:
    """One sweep over slots and bookings, both in time order: O(slots + bookings)."""
    buffer = ctx.rules.buffer
    holding = sorted((b for b in booked if b.status != Status.pending), key=lambda b: b.block_start)
    pending = sorted((b for b in booked if b.status == Status.pending), key=lambda b: b.block_start)
    n_units = len(ctx.units)
    cap = ctx.resource.capacity
    exclusive = ctx.exclusive
    total = n_units if exclusive else cap
    out = []
    active: list[_Booked] = []
    waiting: list[_Booked] = []
    n_hold, n_pend = len(holding), len(pending)
    i = j = 0
    for s, e, local_iso in slots:
        # A booking of this slot would block [s, e + buffer): that is what must be free.
        need_end = e + buffer
        while i < n_hold and holding[i].block_start < need_end:
            active.append(holding[i])
            i += 1
        while j < n_pend and pending[j].block_start < e:
            waiting.append(pending[j])
            j += 1
        if active:
            active = [b for b in active if b.block_end > s]
        if waiting:
            waiting = [b for b in waiting if b.block_end > s]
        if not active:
            available = total
        elif exclusive:
            available = n_units - (1 if n_units == 1 else len({b.unit_id for b in active}))
        else:
            available = cap - peak_places(active, s, need_end)  # type: ignore[arg-type]
        status = "free" if available >= total else ("full" if available <= 0 else "limited")
        # Plain dicts: the whole list is validated at once (in pydantic's core) by the caller.
        out.append(
            {
                "start": s,
                "end": e,
                "local_start": local_iso,
                "status": status,
                "available": max(0, available),
                "pending": len(waiting),
            }
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
    booked = _fetch(session, [ident(ctx.resource)], start, end + ctx.rules.buffer)
    slots = _evaluate(ctx, booked.get(ident(ctx.resource), []), _slots_for(ctx, start, end))
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
    booked = _fetch(session, [ident(c.resource) for c in ctxs], start, end + max_buffer)
    return [
        ResourceAvailability(
            resource=c.resource.key,
            timezone=c.site.timezone,
            capacity=c.resource.capacity,
            units=len(c.units),
            slots=_evaluate(c, booked.get(ident(c.resource), []), _slots_for(c, start, end)),
        )
        for c in ctxs
    ]
