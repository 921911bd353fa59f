"""Read-only figures for the managers' reports: occupancy by weekday and hour in the site's zone,
outcome rates (no-shows, cancellations) and the busiest hours of a venue.

Only the venues the caller manages are counted (404 for any other, as everywhere in bms). Every
figure is computed over a period ``[since, until)`` given in UTC; hours are the site's local hours,
stepped in UTC from a local hour boundary, so a DST change neither loses nor invents an hour.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, text, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bms.context import ResourceCtx, load_many
from bms.models import LONG_SPAN, Reservation, Resource
from bms.states import Status
from core.auth import Principal
from core.db import ident, is_sqlite
from core.errors import NotFound
from core.models import Venue

HOUR = timedelta(hours=1)
# Bookings that held their slot during the period, whether or not the person came.
OCCUPYING = (Status.confirmed, Status.checked_in, Status.completed, Status.no_show)
# Bookings that were confirmed at some point: the base of the outcome rates.
DECIDED = (*OCCUPYING, Status.cancelled)


def managed_venue_resources(session: Session, principal: Principal, venue_key: str) -> tuple[Venue, list[ResourceCtx]]:
    """A venue the caller manages (all venues for admins) with its active resources; 404 otherwise."""
    venue = session.exec(select(Venue).where(col(Venue.key) == venue_key)).first()
    if venue is None or not principal.manages_venue(ident(venue)):
        raise NotFound("venue_not_found", f"no venue {venue_key!r} among yours", field="venue")
    rows = session.exec(
        select(Resource).where(col(Resource.venue_id) == venue.id, Resource.active).order_by(col(Resource.key))
    ).all()
    return venue, load_many(session, list(rows))


def managed_venues(session: Session, principal: Principal) -> list[Venue]:
    stmt = select(Venue).order_by(col(Venue.key))
    if not principal.admin:
        stmt = stmt.where(col(Venue.id).in_(sorted(principal.managed_venues)))
    return list(session.exec(stmt).all())


def _local_hours(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[datetime, int, int]]:
    """(UTC start of the local hour, weekday 0=Monday, local hour) for each local hour touching
    ``[start, end)``."""
    local = start.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    at = local.astimezone(start.tzinfo)
    out = []
    while at < end:
        here = at.astimezone(zone)
        out.append((at, here.weekday(), here.hour))
        at += HOUR
    return out


class _Hours:
    """The local hours of a period in one zone, worked out once: each hour's UTC start (POSIX
    seconds) and its (weekday, hour); a booking then finds its first hour by bisection."""

    def __init__(self, since: datetime, until: datetime, zone: ZoneInfo) -> None:
        hours = _local_hours(since, until, zone)
        self.starts = [at.timestamp() for at, _, _ in hours]
        self.cells = [(wd, hr) for _, wd, hr in hours]
        self.since, self.until = since.timestamp(), until.timestamp()

    def spread(self, lo: float, hi: float) -> Iterator[tuple[int, int, float]]:
        """(weekday, hour, minutes) of ``[lo, hi)`` within the period."""
        lo, hi = max(lo, self.since), min(hi, self.until)
        i = max(0, bisect_right(self.starts, lo) - 1)
        while i < len(self.starts) and self.starts[i] < hi:
            start = self.starts[i]
            minutes = (min(start + 3600, hi) - max(start, lo)) / 60
            if minutes > 0:
                wd, hr = self.cells[i]
                yield wd, hr, minutes
            i += 1


@dataclass
class Occupancy:
    """Per resource: booked place-minutes and offered place-minutes for each (weekday, hour)."""

    resource_key: str
    resource_name: str
    booked: list[list[float]] = field(default_factory=lambda: [[0.0] * 24 for _ in range(7)])
    offered: list[list[float]] = field(default_factory=lambda: [[0.0] * 24 for _ in range(7)])

    def rate(self, weekday: int, hour: int) -> float:
        offered = self.offered[weekday][hour]
        return min(1.0, self.booked[weekday][hour] / offered) if offered else 0.0


def occupancy(session: Session, ctxs: list[ResourceCtx], since: datetime, until: datetime) -> list[Occupancy]:
    """How full each resource was, hour by local hour, over the period (one query)."""
    out = {ident(c.resource): Occupancy(c.resource.key, c.resource.name) for c in ctxs}
    if not ctxs:
        return []
    by_id = {ident(c.resource): c for c in ctxs}
    zones = {tz: _Hours(since, until, ZoneInfo(tz)) for tz in {c.site.timezone for c in ctxs}}
    hours_of = {rid: zones[c.site.timezone] for rid, c in by_id.items()}
    for c in ctxs:
        places = max(c.resource.capacity, len(c.units), 1)
        offered = out[ident(c.resource)].offered
        for wd, hr, minutes in hours_of[ident(c.resource)].spread(since.timestamp(), until.timestamp()):
            offered[wd][hr] += minutes * places
    sqlite = is_sqlite(session)
    # Plain rows of four columns, not ORM objects; on SQLite the stored text is parsed with
    # fromisoformat, as availability does: most of the cost of a month of a busy venue otherwise.
    start_col: Any = type_coerce(Reservation.start, String) if sqlite else col(Reservation.start)
    end_col: Any = type_coerce(Reservation.end, String) if sqlite else col(Reservation.end)
    base = sa_select(col(Reservation.resource_id), start_col, end_col, col(Reservation.places)).where(
        col(Reservation.resource_id).in_(sorted(by_id)),
        col(Reservation.status).in_([s.value for s in OCCUPYING]),
        col(Reservation.block_start) < until,
        col(Reservation.start) < until,
        col(Reservation.end) > since,
    )
    # As availability reads: the (resource, block_start) index from a day before the period, and
    # the partial index of the few longer bookings for what started earlier.
    conn = session.connection()
    rows = list(conn.execute(base.where(col(Reservation.block_start) > since - LONG_SPAN)).all())
    rows += conn.execute(
        base.where(text("reservation.long_span"), col(Reservation.block_start) <= since - LONG_SPAN)
    ).all()
    parse = datetime.fromisoformat
    for resource_id, start, end, places in rows:
        if sqlite:
            start, end = parse(start).replace(tzinfo=UTC), parse(end).replace(tzinfo=UTC)
        booked = out[resource_id].booked
        for wd, hr, minutes in hours_of[resource_id].spread(start.timestamp(), end.timestamp()):
            booked[wd][hr] += minutes * max(places, 1)
    return [out[ident(c.resource)] for c in ctxs]


def busiest_hours(rows: list[Occupancy]) -> list[float]:
    """Booked place-hours per local hour of the day, over the whole venue and period (a booking of
    four places of a shared room counts four)."""
    return [sum(o.booked[wd][hr] for o in rows for wd in range(7)) / 60 for hr in range(24)]


@dataclass
class Outcomes:
    resource_key: str
    resource_name: str
    decided: int = 0
    cancelled: int = 0
    no_show: int = 0

    @property
    def cancellation_rate(self) -> float:
        return self.cancelled / self.decided if self.decided else 0.0

    @property
    def no_show_rate(self) -> float:
        return self.no_show / self.decided if self.decided else 0.0


def outcomes(session: Session, ctxs: list[ResourceCtx], since: datetime, until: datetime) -> list[Outcomes]:
    """Of the bookings confirmed at some point and starting in the period, how many were cancelled
    and how many were no-shows (one grouped query)."""
    out = {ident(c.resource): Outcomes(c.resource.key, c.resource.name) for c in ctxs}
    if not ctxs:
        return []
    rows = session.exec(
        select(Reservation.resource_id, Reservation.status)
        .where(
            col(Reservation.resource_id).in_(sorted(out)),
            col(Reservation.status).in_([s.value for s in DECIDED]),
            col(Reservation.start) >= since,
            col(Reservation.start) < until,
            col(Reservation.block_start) >= since,  # block_start is the start: the index applies
            col(Reservation.block_start) < until,
        )
        .order_by(col(Reservation.id))
    ).all()
    for resource_id, status in rows:
        o = out[resource_id]
        o.decided += 1
        o.cancelled += status == Status.cancelled
        o.no_show += status == Status.no_show
    return [out[ident(c.resource)] for c in ctxs]
