"""Which outbox events become which messages, to whom.

An event (a row the domains wrote: `reservation.confirmed`, `moderation.proposal`...) is expanded
once, in one transaction that also settles it, into one outbox row per delivery: an e-mail per
recipient (`notify.email`, rendered in that person's language with the booking's `.ics`) and a
webhook call per matching endpoint of the site (`notify.webhook`). Each delivery then succeeds,
retries or is parked on its own, so a refused address never makes the others go out twice.
Message ids are fixed at expansion: a retry or a re-send carries the same Message-ID and webhook
`id`, and receivers drop duplicates.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from access.models import Controller, Door, DoorResource
from bms.calendar import reservation_ics
from bms.models import Reservation, Resource
from bms.status import recipients as reservation_recipients
from config.settings import SUPPORTED_LOCALES
from core import outbox
from core.db import utcnow
from core.i18n import local_name
from core.models import Role, RoleGrant, Site, User, Venue
from notify.models import NotifyPreference, WebhookEndpoint
from notify.render import render, translate, when
from vms.models import Visit

log = logging.getLogger("notify.messages")

EMAIL = "notify.email"
WEBHOOK = "notify.webhook"
DELIVERY_KINDS = [EMAIL, WEBHOOK]

PEOPLE = "people"  # the booking's planner and beneficiaries, or the payload's recipients
MANAGERS = "managers"  # the venue's managers
STAFF = "staff"  # admins and the managers of the venues concerned
GUESTS = "guests"  # addresses in the payload (visitors have no account)
RECEPTION = "reception"  # the site's reception


@dataclass(frozen=True)
class Spec:
    template: str
    subject: str
    audience: str
    ics: bool = False
    optional: str | None = None  # a preference that may turn it off


CATALOG: dict[str, list[Spec]] = {
    "reservation.requested": [
        Spec("booking_received", "Request received: {resource}", PEOPLE),
        Spec("to_decide", "To decide: {resource}", MANAGERS),
    ],
    "reservation.confirmed": [Spec("booking_confirmed", "Confirmed: {resource}", PEOPLE, ics=True)],
    "reservation.rejected": [Spec("booking_rejected", "Declined: {resource}", PEOPLE)],
    "reservation.expired": [Spec("booking_expired", "Expired: {resource}", PEOPLE)],
    "reservation.cancelled": [Spec("booking_cancelled", "Cancelled: {resource}", PEOPLE, ics=True)],
    "reservation.changed": [Spec("booking_changed", "Moved: {resource}", PEOPLE, ics=True)],
    "reservation.no_show": [Spec("booking_no_show", "Released: {resource}", PEOPLE)],
    "reservation.change_requested": [Spec("change_to_decide", "Change to decide: {resource}", MANAGERS)],
    "reservation.change_rejected": [Spec("change_rejected", "Change declined: {resource}", PEOPLE)],
    "reservation.reminder": [Spec("reminder", "Reminder: {resource}", PEOPLE, ics=True, optional="reminders")],
    "reservation.follow_up": [Spec("follow_up", "How was it? {resource}", PEOPLE)],
    "moderation.proposal": [Spec("proposal", "Another time proposed: {resource}", PEOPLE)],
    "moderation.proposal_declined": [Spec("proposal_declined", "Proposal declined: {resource}", MANAGERS)],
    "controller.degraded": [Spec("controller_degraded", "Controller degraded: {controller}", STAFF)],
    "access.key_overdue": [Spec("key_overdue", "Key not returned: {door}", STAFF)],
    # visitors (vms): addressed by e-mail in the payload, since a visitor has no account
    "visit.invitation": [Spec("visit_invited", "Invitation: {site}", GUESTS)],
    "visit.invited": [Spec("visit_invited", "Invitation: {site}", GUESTS)],
    "visit.arrival": [Spec("visit_arrived", "Your visitor has arrived: {visitor}", GUESTS)],
    "visit.arrived": [Spec("visit_arrived", "Your visitor has arrived: {visitor}", GUESTS)],
    "visit.on_site_at_closing": [Spec("on_site_at_closing", "Still on site at closing: {site}", RECEPTION)],
    "waitlist.offer": [Spec("waitlist_offer", "A place is free: {resource}", PEOPLE)],
}
# Events that no person is written about, but that webhooks receive.
WEBHOOK_ONLY = ["reservation.checked_in", "reservation.completed"]
EVENT_KINDS = sorted([*CATALOG, *WEBHOOK_ONLY])


@dataclass
class Context:
    """What the templates of one event need, read once for all its recipients."""

    event_id: int
    kind: str
    payload: dict[str, Any]
    reservation: Reservation | None = None
    resource: Resource | None = None
    venue: Venue | None = None
    site: Site | None = None
    values: dict[str, Any] = field(default_factory=dict)


_MEMO = "notify.memo"


def _memo(session: Session) -> dict[Any, Any]:
    """Lookups shared by the events expanded in one transaction (a batch names the same few sites)."""
    memo: dict[Any, Any] = session.info.setdefault(_MEMO, {})
    return memo


def _by_key(session: Session, model: Any, key: str) -> Any:
    memo = _memo(session)
    if (model, key) not in memo:
        memo[(model, key)] = session.exec(select(model).where(model.key == key)).first()
    return memo[(model, key)]


def _endpoints(session: Session, site_id: int) -> list[WebhookEndpoint]:
    memo = _memo(session)
    if ("endpoints", site_id) not in memo:
        memo[("endpoints", site_id)] = list(session.exec(_SITE_ENDPOINTS, params={"site": site_id}).all())
    found: list[WebhookEndpoint] = memo[("endpoints", site_id)]
    return found


_SITE_ENDPOINTS = select(WebhookEndpoint).where(
    col(WebhookEndpoint.site_id) == bindparam("site"), col(WebhookEndpoint.active)
)
_BOOKING_AND_PLACE = (
    select(Reservation, Resource, Venue, Site)
    .join(Resource, col(Resource.id) == col(Reservation.resource_id))
    .join(Venue, col(Venue.id) == col(Resource.venue_id))
    .join(Site, col(Site.id) == col(Venue.site_id))
    .where(col(Reservation.id) == bindparam("rid"))
)


def _load(session: Session, msg: outbox.Claimed) -> Context:
    p = msg.payload
    ctx = Context(msg.id, msg.kind, p)
    rid = p.get("reservation_id")
    if rid is not None:  # most events: the booking and its place in one statement
        found = session.exec(_BOOKING_AND_PLACE, params={"rid": int(rid)}).first()
        if found is not None:
            ctx.reservation, ctx.resource, ctx.venue, ctx.site = found
    if ctx.reservation is None:
        if p.get("resource"):
            ctx.resource = _by_key(session, Resource, str(p["resource"]))
        if ctx.resource is not None:
            ctx.venue = session.get(Venue, ctx.resource.venue_id)
        elif p.get("venue"):
            ctx.venue = _by_key(session, Venue, str(p["venue"]))
        if ctx.venue is not None:
            ctx.site = session.get(Site, ctx.venue.site_id)
        elif p.get("visit_id") is not None:
            visit = session.get(Visit, int(p["visit_id"]))
            ctx.site = session.get(Site, visit.site_id) if visit is not None else None
        elif p.get("site_key") or p.get("site"):
            ctx.site = _by_key(session, Site, str(p.get("site_key") or p["site"]))
    r = ctx.reservation
    ctx.values = {
        **{k: v for k, v in p.items() if isinstance(v, str | int | float)},
        "resource": ctx.resource.name if ctx.resource else str(p.get("resource", "")),
        "venue": ctx.venue.name if ctx.venue else "",
        "site": ctx.site.name if ctx.site else str(p.get("site", "")),
        "reason": p.get("reason") or (r.status_reason if r is not None and msg.kind != "reservation.confirmed" else ""),
        "reservation_id": r.id if r is not None else p.get("reservation_id"),
        "visitor": str(p.get("visitor_name") or p.get("visitor") or ""),
        "host": str(p.get("host_name") or p.get("host") or ""),
        "visitor_list": ", ".join(
            str(v.get("visitor_name", "")) for v in p.get("visitors") or [] if isinstance(v, dict)
        ),
    }
    return ctx


def _names(ctx: Context, locale: str) -> dict[str, str]:
    """The place's names in the recipient's language, where the site file gives them."""
    rows = (("resource", ctx.resource), ("venue", ctx.venue), ("site", ctx.site))
    return {key: local_name(row, locale) for key, row in rows if row is not None}


def _times(ctx: Context, locale: str) -> dict[str, str]:
    zone = ctx.site.timezone if ctx.site else str(ctx.payload.get("site_timezone") or "UTC")
    out: dict[str, str] = {}
    p = ctx.payload
    start, end = p.get("new_start") or p.get("start"), p.get("new_end") or p.get("end")
    if ctx.kind == "reservation.changed" and ctx.reservation is not None:
        start, end = ctx.reservation.start.isoformat(), ctx.reservation.end.isoformat()
    if start and end:
        out["when"] = when(datetime.fromisoformat(start), datetime.fromisoformat(end), zone, locale)
    elif p.get("at"):
        at = datetime.fromisoformat(p["at"]).astimezone(ZoneInfo(zone))
        loc = locale if locale in SUPPORTED_LOCALES else "en"
        out["when"] = format_datetime(at, format="EEEE d MMMM y, HH:mm", locale=loc) + f" ({zone})"
    if p.get("expires_at"):
        until = datetime.fromisoformat(p["expires_at"]).astimezone(ZoneInfo(zone))
        loc = locale if locale in SUPPORTED_LOCALES else "en"
        out["until"] = format_datetime(until, format="EEEE d MMMM, HH:mm", locale=loc)
    before = p.get("before")
    if isinstance(before, dict) and before.get("start") and before.get("end"):
        out["before"] = when(
            datetime.fromisoformat(before["start"]), datetime.fromisoformat(before["end"]), zone, locale
        )
    elif ctx.kind == "reservation.change_requested" and ctx.reservation is not None:
        out["before"] = when(ctx.reservation.start, ctx.reservation.end, zone, locale)
    return out


def _managers(session: Session, venue_ids: set[int], admins: bool) -> list[User]:
    grants = select(RoleGrant.user_id).where(
        (col(RoleGrant.role) == Role.venue_manager.value) & col(RoleGrant.venue_id).in_(venue_ids)
        | ((col(RoleGrant.role) == Role.admin.value) if admins else False)
    )
    return list(session.exec(select(User).where(col(User.id).in_(grants)).order_by(col(User.id))).all())


def _controller_venues(session: Session, controller_key: str) -> set[int]:
    rows = session.exec(
        select(Resource.venue_id)
        .join(DoorResource, col(DoorResource.resource_id) == Resource.id)
        .join(Door, col(Door.id) == DoorResource.door_id)
        .join(Controller, col(Controller.id) == Door.controller_id)
        .where(col(Controller.key) == controller_key)
    ).all()
    return set(rows)


def people(session: Session, ctx: Context, spec: Spec) -> list[tuple[str, str, str, int | None]]:
    """(address, name, locale, user id) of each recipient of one spec."""
    users: list[User] = []
    p = ctx.payload
    if spec.audience == PEOPLE:
        ids = p.get("recipients")
        if ids is None and ctx.reservation is not None:
            ids = reservation_recipients(session, ctx.reservation)
        if ids:
            users = list(session.exec(select(User).where(col(User.id).in_([int(i) for i in ids]))).all())
    elif spec.audience == MANAGERS and ctx.venue is not None:
        users = _managers(session, {ctx.venue.id or 0}, admins=False)
    elif spec.audience == STAFF:
        venues = _controller_venues(session, str(p.get("controller", ""))) if p.get("controller") else set()
        if ctx.venue is not None:
            venues.add(ctx.venue.id or 0)
        users = _managers(session, venues, admins=True)
    elif spec.audience == RECEPTION and ctx.site is not None:
        desk = select(RoleGrant.user_id).where(
            col(RoleGrant.role) == Role.reception.value, col(RoleGrant.site_id) == ctx.site.id
        )
        users = list(session.exec(select(User).where(col(User.id).in_(desk)).order_by(col(User.id))).all())
    elif spec.audience == GUESTS:
        guests: list[tuple[str, str, str, int | None]] = []
        if isinstance(p.get("to"), str) and p["to"]:
            name = str(p.get("visitor_name") if msg_kind_is_invitation(ctx.kind) else p.get("host_name") or "")
            guests.append((p["to"], name, str(p.get("locale") or "en"), None))
        for guest in p.get("emails") or []:
            if isinstance(guest, dict) and guest.get("email"):
                guests.append((str(guest["email"]), str(guest.get("name", "")), str(guest.get("locale", "en")), None))
        return guests
    users = [u for u in users if u.is_active and u.email]
    if spec.optional and users:
        off = set(
            session.exec(
                select(NotifyPreference.user_id).where(
                    col(NotifyPreference.user_id).in_([u.id for u in users]),
                    col(getattr(NotifyPreference, spec.optional)).is_(False),
                )
            ).all()
        )
        users = [u for u in users if u.id not in off]
    seen: set[int] = set()
    out: list[tuple[str, str, str, int | None]] = []
    for u in users:
        if u.id in seen:
            continue
        seen.add(u.id or 0)
        # The recipient's chosen language, else the site's (a message has no browser to ask).
        language = u.locale if u.locale_chosen or ctx.site is None else ctx.site.locale
        out.append((u.email, u.name, language, u.id))
    return out


def msg_kind_is_invitation(kind: str) -> bool:
    return kind in ("visit.invitation", "visit.invited")


def webhook_body(ctx: Context, now: datetime) -> dict[str, Any]:
    """What endpoints receive: a stable id, the type, and the event's data (without user ids of recipients)."""
    data = {k: v for k, v in ctx.payload.items() if k not in ("recipients", "emails", "to")}
    if ctx.site is not None:
        data.setdefault("site", ctx.site.key)
    return {"id": f"msg_{ctx.event_id}", "type": ctx.kind, "created_at": now.isoformat(), "data": data}


def expand(session: Session, msg: outbox.Claimed, portal_url: str = "", *, email: bool = True) -> int:
    """Write the deliveries of one event into the caller's transaction; return how many. Without
    an SMTP server (`email=False`) no e-mail is written: webhooks still go out."""
    ctx = _load(session, msg)
    n = 0
    ics: str | None = None
    for spec in CATALOG.get(msg.kind, []) if email else []:
        if spec.ics and ctx.reservation is not None and ics is None:
            ics = reservation_ics(session, ctx.reservation).decode()
        for address, name, locale, user_id in people(session, ctx, spec):
            values = {**ctx.values, **_times(ctx, locale), **_names(ctx, locale), "name": name, "portal": portal_url}
            if msg.kind == "reservation.reminder":
                values["delay"] = _delay(int(ctx.payload.get("offset_minutes", 0)), locale)
            values.setdefault("requester", _requester(session, ctx))
            page = render(spec.template, spec.subject, locale, values)
            outbox.enqueue(
                session,
                EMAIL,
                {
                    "event_id": msg.id,
                    "event_kind": msg.kind,
                    "user_id": user_id,
                    "to": address,
                    "to_name": name,
                    "subject": page.subject,
                    "text": page.text,
                    "html": page.html,
                    "ics": ics if spec.ics else None,
                    "ics_name": f"reservation-{ctx.reservation.id}.ics" if ctx.reservation is not None else None,
                    "message_id": f"<{msg.id}.{user_id or 0}.{secrets.token_hex(6)}@bookgate>",
                    # the invitation's code is drawn when sending, never stored (vms keeps only its hash)
                    "qr_visit_id": ctx.payload.get("visit_id") if msg_kind_is_invitation(msg.kind) else None,
                },
            )
            n += 1
    if ctx.site is not None:
        endpoints = _endpoints(session, ctx.site.id or 0)
        body = webhook_body(ctx, utcnow())
        for ep in endpoints:
            if ep.events and msg.kind not in ep.events:
                continue
            outbox.enqueue(session, WEBHOOK, {"endpoint_id": ep.id, "body": body})
            n += 1
    return n


def _delay(minutes: int, locale: str) -> str:
    t = translate(locale)
    if minutes % 60 == 0 and minutes >= 60:
        hours = minutes // 60
        return t("1 hour") if hours == 1 else t("{n} hours", n=hours)
    return t("{n} minutes", n=minutes)


def _requester(session: Session, ctx: Context) -> str:
    if ctx.reservation is None:
        return ""
    user = session.get(User, ctx.reservation.planner_id)
    return user.name if user else ""
