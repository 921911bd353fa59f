"""Bookable slots for calendar views: one range query per call, whatever the number of resources.

A slot is `free` (nothing booked), `limited` (some units or places left) or `full`; `pending`
counts the requests waiting for a manager on it. Slots follow the resource's grid in the
site's zone and skip closed hours and blackouts.

Internally a day is columnar: the grid of a rule set (cached) gives each slot's bounds as epoch
seconds, bookings arrive as integer rows, and each resource's slots become three lists of ints
(available, pending, status). Two answers are shaped from that: the full one (one object per slot)
and the compact one (runs of consecutive slots of equal status, availability and pending count).

A venue's active resources, their units and effective rules change only with a site import or a
manager's rule edit: they are cached per node under the `cache_stamp` row those writers replace
(`bump_stamp`), checked with one primary-key read per request.
"""

from __future__ import annotations

import secrets
import threading
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Any
from typing import cast as cast_any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy import BigInteger, Integer, cast, extract, func, text
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from bms.context import ResourceCtx, can_see, load_many
from bms.holds import held_rows
from bms.models import LONG_SPAN, CacheStamp, Reservation, Resource
from bms.rules import EffectiveRules
from bms.states import HOLDING, Status
from core.auth import Principal
from core.db import ident, is_sqlite
from core.errors import Invalid, NotFound
from core.models import Venue

MAX_RANGE = timedelta(days=31)
STAMP = "resources"  # the cache_stamp row of resources, units, venues' and sites' rules

_FREE, _LIMITED, _FULL = 0, 1, 2
STATUS_NAMES = ("free", "limited", "full")


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


class SlotRange(BaseModel):
    """Consecutive slots with the same status, availability and pending count: [start, end)."""

    start: datetime
    end: datetime
    local_start: str
    slots: int
    status: str
    available: int
    pending: int


class ResourceDay(BaseModel):
    """A resource's day in the compact form: its slots as runs (closed hours break a run)."""

    resource: str
    timezone: str
    capacity: int
    units: int
    slot_minutes: int
    ranges: list[SlotRange]


# ---------------------------------------------------------------- cache of venues' contexts


def bump_stamp(session: Session) -> None:
    """Every writer of resources, units, venues' or sites' rules calls this in its transaction:
    every node's cache of them is then stale from the commit on."""
    t: Any = cast_any(Any, CacheStamp).__table__
    stmt = (pg_insert(t) if session.get_bind().dialect.name == "postgresql" else sqlite_insert(t)).values(
        name=STAMP, stamp=secrets.token_hex(16)
    )
    stmt = stmt.on_conflict_do_update(index_elements=[t.c.name], set_={"stamp": stmt.excluded.stamp})
    session.connection().execute(stmt)


def read_stamp(session: Session) -> str | None:
    t: Any = cast_any(Any, CacheStamp).__table__
    return session.connection().execute(sa_select(t.c.stamp).where(t.c.name == STAMP)).scalar()


@dataclass(frozen=True)
class _Config:
    """Every active resource of the database with its venue, site, units and rules, read at once."""

    stamp: str
    resources: dict[str, ResourceCtx]  # by resource key
    venues: dict[str, tuple[ResourceCtx, ...]]  # by venue key: its active resources by key


_configs: dict[str, _Config] = {}  # by database url
_load_lock = threading.Lock()


def _load_config(session: Session, stamp: str) -> _Config:
    """Read on the caller's connection through a session of its own, whose objects are then
    detached: shared read-only by every request of this node until the stamp changes."""
    side = Session(bind=session.connection())
    try:
        venues = {v.id: v.key for v in side.exec(select(Venue)).all()}
        resources = side.exec(select(Resource).where(Resource.active).order_by(col(Resource.key))).all()
        ctxs = load_many(side, list(resources))
        side.expunge_all()
    finally:
        side.close()
    by_venue: dict[str, list[ResourceCtx]] = {key: [] for key in venues.values()}
    for c in ctxs:
        by_venue[venues[c.resource.venue_id]].append(c)
    return _Config(stamp, {c.resource.key: c for c in ctxs}, {k: tuple(v) for k, v in by_venue.items()})


def _config(session: Session) -> _Config:
    stamp = read_stamp(session)
    if stamp is None:  # never stamped (no import yet): nothing to compare with, read afresh
        return _load_config(session, "")
    url = str(session.connection().engine.url)
    cfg = _configs.get(url)
    if cfg is not None and cfg.stamp == stamp:
        return cfg
    with _load_lock:  # one reader per node after a change; the others wait for its result
        cfg = _configs.get(url)
        if cfg is None or cfg.stamp != stamp:
            if len(_configs) >= 64:  # many databases in one process: tests
                _configs.clear()
            cfg = _configs[url] = _load_config(session, stamp)
    return cfg


def cached_venue(session: Session, key: str) -> tuple[ResourceCtx, ...] | None:
    """The venue's active resources (by key) with units and rules; None when there is no such venue.
    Shared objects: read them, never change them."""
    return _config(session).venues.get(key)


def visible_resource(session: Session, principal: Principal, key: str) -> ResourceCtx:
    """An active resource the caller may see (cached like venues); 404 otherwise."""
    ctx = _config(session).resources.get(key)
    if ctx is None or not can_see(principal, ctx):
        raise NotFound("resource_not_found", f"no resource {key!r}", field="resource")
    return ctx


def venue_contexts(session: Session, principal: Principal, key: str) -> list[ResourceCtx]:
    """The venue's active resources the caller may see (cached); 404 when there is none."""
    ctxs = [c for c in cached_venue(session, key) or () if can_see(principal, c)]
    if not ctxs:
        raise NotFound("venue_not_found", f"no venue {key!r}")
    return ctxs


# ---------------------------------------------------------------- the slot grid


class _Grid:
    """The bookable slots of a rule set over a range, in columns; shared by every resource with
    those rules. Instants as epoch seconds; their JSON forms are made once, when first asked for."""

    def __init__(self, starts: list[datetime], ends: list[datetime], tz: ZoneInfo) -> None:
        self.start_dt = starts
        self.end_dt = ends
        self.tz = tz
        self.start = [int(a.timestamp()) for a in starts]
        self.end = [int(z.timestamp()) for z in ends]
        self.local = [a.astimezone(tz).isoformat() for a in starts]

    @cached_property
    def js_start(self) -> list[str]:
        return [_dump(a) for a in self.start_dt]

    @cached_property
    def js_end(self) -> list[str]:
        return [_dump(z) for z in self.end_dt]

    @cached_property
    def js_local(self) -> list[str]:
        return [_dump(x) for x in self.local]

    @cached_property
    def head(self) -> list[str]:
        """'{"start":..,"end":..,"local_start":..,"status":"' of each slot in the full form."""
        return [
            f'{{"start":{s},"end":{e},"local_start":{loc},"status":"'
            for s, e, loc in zip(self.js_start, self.js_end, self.js_local, strict=True)
        ]


def _dump(x: Any) -> str:
    return to_json(x).decode()


@lru_cache(maxsize=2048)
def _grid(rules: EffectiveRules, start: datetime, end: datetime) -> _Grid:
    tz = rules.tz
    out: set[tuple[datetime, datetime]] = set()
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
            t = lo.astimezone(UTC)
            hi_utc = hi.astimezone(UTC)
            while t + step <= hi_utc:
                if t >= start and t + step <= end and rules.blackout_hit(t, t + step) is None:
                    out.add((t, t + step))
                t += step
        day += timedelta(days=1)
    slots = sorted(out)
    return _Grid([a for a, _ in slots], [z for _, z in slots], tz)


# ---------------------------------------------------------------- bookings


_Hold = tuple[int, int, int, int]  # block start, block end (epoch s), unit id, places
_Pend = tuple[int, int]


def _fetch(
    session: Session, resource_ids: list[int], start: datetime, end: datetime
) -> dict[int, tuple[list[_Hold], list[_Pend]]]:
    """Holding and pending bookings touching [start, end), as integer rows, by resource."""
    if is_sqlite(session):
        bs: Any = cast(func.strftime("%s", Reservation.block_start), Integer)
        be: Any = cast(func.strftime("%s", Reservation.block_end), Integer)
    else:
        bs = cast(extract("epoch", col(Reservation.block_start)), BigInteger)
        be = cast(extract("epoch", col(Reservation.block_end)), BigInteger)
    base = sa_select(
        col(Reservation.resource_id), col(Reservation.unit_id), bs, be, col(Reservation.places), col(Reservation.status)
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
    out: dict[int, tuple[list[_Hold], list[_Pend]]] = defaultdict(lambda: ([], []))
    pending = Status.pending.value
    for rid, uid, b0, b1, places, status in rows:
        if status == pending:
            out[rid][1].append((b0, b1))
        else:
            out[rid][0].append((b0, b1, uid, places))
    for rid, *held in held_rows(session, resource_ids, start, end):  # places open waitlist offers hold
        out[rid][0].append(tuple(held))  # type: ignore[arg-type]
    return out


def _peak(active: list[_Hold], lo: int, hi: int) -> int:
    """The most places in use at any instant of [lo, hi)."""
    edges: list[tuple[int, int]] = []
    for b0, b1, _uid, places in active:
        a, z = max(b0, lo), min(b1, hi)
        if a < z:
            edges += [(a, places), (z, -places)]
    peak = used = 0
    for _, delta in sorted(edges):
        used += delta
        peak = max(peak, used)
    return peak


def _columns(
    ctx: ResourceCtx, hold: list[_Hold], pend: list[_Pend], grid: _Grid
) -> tuple[list[int], list[int], list[int]]:
    """Available count, pending count and status code of each slot of the grid."""
    S, E = grid.start, grid.end
    n = len(S)
    buf = int(ctx.rules.buffer.total_seconds())
    n_units = len(ctx.units)
    cap = ctx.resource.capacity
    exclusive = ctx.exclusive
    total = n_units if exclusive else cap
    pending = [0] * n
    for p0, p1 in pend:  # a request waits on the slots it overlaps (its block, without buffer)
        for k in range(bisect_right(E, p0), bisect_left(S, p1)):
            pending[k] += 1
    if not hold:
        available = [total] * n
    elif exclusive and n_units == 1:
        # A booking of slot k would block [S[k], E[k] + buffer): any holding block in there fills it.
        available = [1] * n
        ends_buf = [e + buf for e in E] if buf else E
        for b0, b1, _uid, _places in hold:
            lo, hi = bisect_right(ends_buf, b0), bisect_left(S, b1)
            if lo < hi:
                available[lo:hi] = [0] * (hi - lo)
    else:  # pools and capacities: one sweep over slots and bookings, both in time order
        hold = sorted(hold)
        available = []
        active: list[_Hold] = []
        i, n_hold = 0, len(hold)
        for s, e in zip(S, E, strict=True):
            need_end = e + buf
            while i < n_hold and hold[i][0] < need_end:
                active.append(hold[i])
                i += 1
            if active:
                active = [b for b in active if b[1] > s]
            if not active:
                available.append(total)
            elif exclusive:
                available.append(n_units - len({b[2] for b in active}))
            else:
                available.append(cap - _peak(active, s, need_end))
    status = [_FREE if a >= total else (_FULL if a <= 0 else _LIMITED) for a in available]
    return [max(0, a) for a in available], pending, status


# ---------------------------------------------------------------- answers


@dataclass
class _ResourceSlots:
    ctx: ResourceCtx
    grid: _Grid
    available: list[int]
    pending: list[int]
    status: list[int]

    def full(self) -> ResourceAvailability:
        g = self.grid
        return ResourceAvailability.model_validate(
            {
                "resource": self.ctx.resource.key,
                "timezone": self.ctx.site.timezone,
                "capacity": self.ctx.resource.capacity,
                "units": len(self.ctx.units),
                "slots": [
                    {
                        "start": g.start_dt[k],
                        "end": g.end_dt[k],
                        "local_start": g.local[k],
                        "status": STATUS_NAMES[st],
                        "available": a,
                        "pending": p,
                    }
                    for k, (a, p, st) in enumerate(zip(self.available, self.pending, self.status, strict=True))
                ],
            }
        )

    def _head(self) -> str:
        c = self.ctx
        return (
            f'{{"resource":{_dump(c.resource.key)},"timezone":{_dump(c.site.timezone)},'
            f'"capacity":{c.resource.capacity},"units":{len(c.units)},'
        )

    def full_json(self) -> str:
        head = self.grid.head
        tails: dict[tuple[int, int, int], str] = {}
        parts = []
        for k, key in enumerate(zip(self.status, self.available, self.pending, strict=True)):
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = f'{STATUS_NAMES[key[0]]}","available":{key[1]},"pending":{key[2]}}}'
            parts.append(head[k] + tail)
        return self._head() + '"slots":[' + ",".join(parts) + "]}"

    def runs(self) -> list[tuple[int, int]]:
        """[first, last] slot indexes of each run of contiguous slots with equal values."""
        S, E = self.grid.start, self.grid.end
        av, pe, st = self.available, self.pending, self.status
        out: list[tuple[int, int]] = []
        first = 0
        for k in range(1, len(S)):
            if E[k - 1] != S[k] or av[k] != av[first] or pe[k] != pe[first] or st[k] != st[first]:
                out.append((first, k - 1))
                first = k
        if S:
            out.append((first, len(S) - 1))
        return out

    def compact(self) -> ResourceDay:
        g = self.grid
        c = self.ctx
        return ResourceDay(
            resource=c.resource.key,
            timezone=c.site.timezone,
            capacity=c.resource.capacity,
            units=len(c.units),
            slot_minutes=int(c.rules.slot.total_seconds() // 60),
            ranges=[
                SlotRange(
                    start=g.start_dt[a],
                    end=g.end_dt[z],
                    local_start=g.local[a],
                    slots=z - a + 1,
                    status=STATUS_NAMES[self.status[a]],
                    available=self.available[a],
                    pending=self.pending[a],
                )
                for a, z in self.runs()
            ],
        )

    def compact_json(self) -> str:
        g = self.grid
        parts = [
            f'{{"start":{g.js_start[a]},"end":{g.js_end[z]},"local_start":{g.js_local[a]},'
            f'"slots":{z - a + 1},"status":"{STATUS_NAMES[self.status[a]]}","available":{self.available[a]},'
            f'"pending":{self.pending[a]}}}'
            for a, z in self.runs()
        ]
        return (
            self._head()
            + f'"slot_minutes":{int(self.ctx.rules.slot.total_seconds() // 60)},"ranges":['
            + ",".join(parts)
            + "]}"
        )


@dataclass
class VenueDay:
    """One day of a venue's resources, ready to be shaped in either form."""

    resources: list[_ResourceSlots]

    def full(self) -> list[ResourceAvailability]:
        return [r.full() for r in self.resources]

    def compact(self) -> list[ResourceDay]:
        return [r.compact() for r in self.resources]

    def full_json(self) -> bytes:
        """The JSON of `full()`, byte for byte, joined from the grid's ready fragments."""
        return ("[" + ",".join(r.full_json() for r in self.resources) + "]").encode()

    def compact_json(self) -> bytes:
        return ("[" + ",".join(r.compact_json() for r in self.resources) + "]").encode()


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("timezone_aware", "give times with a UTC offset", field="from")
    if end <= start:
        raise Invalid("invalid_range", "'to' must be after 'from'", field="to")
    if end - start > MAX_RANGE:
        raise Invalid("range_too_long", f"at most {MAX_RANGE.days} days per query", field="to")


def _slots(session: Session, ctxs: list[ResourceCtx], start: datetime, end: datetime) -> list[_ResourceSlots]:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    max_buffer = max(c.rules.buffer for c in ctxs)
    booked = _fetch(session, [ident(c.resource) for c in ctxs], start, end + max_buffer)
    out = []
    empty: tuple[list[_Hold], list[_Pend]] = ([], [])
    for c in ctxs:
        grid = _grid(c.rules, start, end)
        hold, pend = booked.get(ident(c.resource), empty)
        out.append(_ResourceSlots(c, grid, *_columns(c, hold, pend, grid)))
    return out


def resource_availability(session: Session, ctx: ResourceCtx, start: datetime, end: datetime) -> ResourceAvailability:
    _check_range(start, end)
    return _slots(session, [ctx], start, end)[0].full()


def venue_day(session: Session, ctxs: list[ResourceCtx], day: date) -> VenueDay:
    """A local day (the venue's site zone) of these resources: one range query for all of them."""
    if not ctxs:
        return VenueDay([])
    tz = ctxs[0].rules.tz
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tz)
    return VenueDay(_slots(session, ctxs, start, end))


def venue_availability(session: Session, ctxs: list[ResourceCtx], day: date) -> list[ResourceAvailability]:
    return venue_day(session, ctxs, day).full()
