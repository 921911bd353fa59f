"""Reservations as iCalendar (RFC 5545): one booking's `.ics`, a person's feed, a resource's feed.

Each booking is one VEVENT whose UID never changes; SEQUENCE counts its changes (a cancellation
counts too) so calendar clients replace the older copy; times are written in the site's zone
with its VTIMEZONE, so a weekly booking stays at its local hour across DST in every client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event
from sqlmodel import Session, col, select

from bms.models import Reservation, ReservationBeneficiary, Resource
from bms.states import Status
from core.db import utcnow
from core.models import Site, Venue

PRODID = "-//Bookgate//Reservations//EN"
UID_DOMAIN = "bookgate"
FEED_PAST = timedelta(days=90)
FEED_LIMIT = 2000
_ENDED = {Status.cancelled.value, Status.rejected.value, Status.expired.value}


def uid(reservation_id: int) -> str:
    return f"reservation-{reservation_id}@{UID_DOMAIN}"


def sequence(r: Reservation) -> int:
    """Grows with every change of times and once more when the booking ends without taking place."""
    return r.changes + (1 if r.status in _ENDED else 0)


def _places(session: Session, resource_ids: Iterable[int]) -> dict[int, tuple[Resource, Venue, Site]]:
    ids = sorted(set(resource_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(Resource, Venue, Site)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .join(Site, col(Site.id) == Venue.site_id)
        .where(col(Resource.id).in_(ids))
    ).all()
    return {res.id: (res, venue, site) for res, venue, site in rows if res.id is not None}


def event(r: Reservation, resource: Resource, venue: Venue, site: Site, stamp: datetime) -> Event:
    zone = ZoneInfo(site.timezone)
    ev = Event()
    ev.add("uid", uid(r.id or 0))
    ev.add("dtstamp", stamp)
    ev.add("dtstart", r.start.astimezone(zone))
    ev.add("dtend", r.end.astimezone(zone))
    ev.add("summary", resource.name)
    ev.add("location", f"{resource.name}, {venue.name}, {site.name}")
    ev.add("sequence", sequence(r))
    ev.add("last-modified", r.updated_at)
    ev.add("status", "CANCELLED" if r.status in _ENDED else "CONFIRMED" if r.status != "pending" else "TENTATIVE")
    if r.note:
        ev.add("description", r.note)
    return ev


def calendar(
    session: Session, reservations: Sequence[Reservation], *, name: str | None = None, method: str | None = None
) -> bytes:
    """The reservations as one VCALENDAR with a VTIMEZONE for every zone used."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    if method:
        cal.add("method", method)
    if name:
        cal.add("x-wr-calname", name)
    places = _places(session, (r.resource_id for r in reservations))
    stamp = utcnow().replace(microsecond=0)
    for r in reservations:
        resource, venue, site = places[r.resource_id]
        cal.add_component(event(r, resource, venue, site, stamp))
    cal.add_missing_timezones()
    return cal.to_ical()


def reservation_ics(session: Session, r: Reservation) -> bytes:
    """One booking, as attached to its messages. PUBLISH (RFC 5546) needs no organizer; a booking
    that ends without taking place is published again with STATUS:CANCELLED and a higher SEQUENCE."""
    return calendar(session, [r], method="PUBLISH")


def user_feed(session: Session, user_id: int, now: datetime | None = None) -> bytes:
    """Everything a person planned or benefits from, from 90 days back."""
    since = (now or utcnow()) - FEED_PAST
    bens = select(ReservationBeneficiary.reservation_id).where(col(ReservationBeneficiary.user_id) == user_id)
    rows = session.exec(
        select(Reservation)
        .where(
            (col(Reservation.planner_id) == user_id) | col(Reservation.id).in_(bens),
            col(Reservation.end) >= since,
        )
        .order_by(col(Reservation.start))
        .limit(FEED_LIMIT)
    ).all()
    return calendar(session, rows, name="Bookgate")


def resource_feed(session: Session, resource: Resource, now: datetime | None = None) -> bytes:
    """A resource's bookings that hold or ask for it, for its managers."""
    since = (now or utcnow()) - FEED_PAST
    rows = session.exec(
        select(Reservation)
        .where(
            col(Reservation.resource_id) == resource.id,
            col(Reservation.end) >= since,
            col(Reservation.status).in_(
                [Status.pending.value, Status.confirmed.value, Status.checked_in.value, Status.completed.value]
            ),
        )
        .order_by(col(Reservation.start))
        .limit(FEED_LIMIT)
    ).all()
    return calendar(session, rows, name=resource.name)
