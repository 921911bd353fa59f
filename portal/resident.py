"""Residents' pages: home, find a slot (a venue's day, a resource's week), book, my reservations
(cancel, reschedule, duplicate, a manager's proposal).

Every write goes through the same bms and moderation services as the API, in the request's unit
of work; a refusal rolls it back (`ShowPage`) and shows the form again with the reason next to
the field. A booking form carries a one-time token used as the Idempotency-Key: a form sent
twice books once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bms import availability, queries, recurrence, service
from bms.booking import NO_POLICIES, BookingPolicies, ResourceCtx, can_see, visible_resource
from bms.calendar import reservation_ics
from bms.context import load_many, require_can_book
from bms.models import Reservation, ReservationBeneficiary, Resource
from bms.states import ACTIVE, HOLDING, Status
from core.auth import Principal
from core.db import utcnow
from core.deps import EngineDep, SessionDep, WriteSessionDep
from core.errors import AppError, Invalid, NotFound
from core.i18n import N_
from core.models import Role, Site, User, Venue
from moderation import service as moderation_service
from moderation.models import ChangeProposal
from portal.layout import ShowPage, check_origin, new_form_token, render, require_page

router = APIRouter(include_in_schema=False)

KINDS = {
    "court": N_("Courts"),
    "room": N_("Rooms"),
    "parking": N_("Parking"),
    "equipment": N_("Equipment"),
}
KIND_ONE = {"court": N_("court"), "room": N_("room"), "parking": N_("parking"), "equipment": N_("equipment")}
SLOT_LABELS = {
    "free": N_("free"),
    "limited": N_("places left"),
    "full": N_("full"),
    "mine": N_("mine"),
    "pending": N_("requested"),
}
STATUS_LABELS = {
    Status.pending: N_("waiting for a manager"),
    Status.confirmed: N_("confirmed"),
    Status.rejected: N_("refused"),
    Status.cancelled: N_("cancelled"),
    Status.checked_in: N_("checked in"),
    Status.completed: N_("completed"),
    Status.no_show: N_("no-show"),
    Status.expired: N_("expired"),
}
# The refusals of the booking services, in words (the API's codes).
REASONS = {
    "slot_taken": N_("This time is already booked."),
    "off_grid": N_("Bookings start and end on this place's time grid."),
    "too_short": N_("This is too short for this place."),
    "too_long": N_("This is too long for this place."),
    "outside_opening_hours": N_("The place is closed during part of this time."),
    "blackout": N_("The place is closed at this time."),
    "in_the_past": N_("This time has already begun."),
    "too_late_to_book": N_("It is too late to book this time."),
    "too_far_ahead": N_("This is too far ahead to book."),
    "quota_exceeded": N_("You have reached your booking limit."),
    "too_many_beneficiaries": N_("Too many beneficiaries for this place."),
    "unknown_beneficiary": N_("Someone you named is not a resident of this site."),
    "too_many_places": N_("This place does not hold that many people."),
    "not_a_resident": N_("Only residents of this site book here."),
    "self_service_disabled": N_("This place is booked by its managers only."),
    "change_deadline_passed": N_("It is too late to change this booking."),
    "too_many_changes": N_("This booking was changed too many times."),
    "not_modifiable": N_("This booking can no longer be changed."),
    "not_the_planner": N_("Only the person who booked may change this."),
    "invalid_range": N_("The end must be after the start."),
    "proposal_closed": N_("This proposal is no longer open."),
    "proposal_expired": N_("This proposal is no longer open."),
    "no_change": N_("Nothing changed."),
    "idempotency_key_reused": N_("This form was already sent. Open the calendar again."),
}
NOTICES = {
    "booked": N_("Booked."),
    "requested": N_("Requested: a manager will confirm it."),
    "cancelled": N_("The booking is cancelled."),
    "moved": N_("The booking is moved."),
    "move_requested": N_("The change is requested: a manager will confirm it."),
    "duplicated": N_("The booking is copied."),
    "series": N_("The series is booked."),
    "series_cancelled": N_("The series is cancelled from that date on."),
    "series_moved": N_("The series is changed."),
    "accepted": N_("You accepted the proposal."),
    "declined": N_("You declined the proposal."),
}
NEXT_FREE = 6
CLOSED = (Status.cancelled, Status.rejected, Status.expired)


def policies_of(request: Request) -> BookingPolicies:
    return getattr(request.app.state, "booking_policies", NO_POLICIES)


@dataclass
class Refusal:
    """A service's refusal as a page shows it: the field it concerns and words for it."""

    field: str
    reason: str
    detail: str

    @classmethod
    def of(cls, exc: AppError, default_field: str = "") -> Refusal:
        where = (exc.field or default_field).split(".")[0]
        where = {"dates": "date"}.get(where, where)  # a duplicate's one date
        return cls(where, REASONS.get(exc.code, N_("This was refused.")), exc.message)


# ---------------------------------------------------------------- home


@router.get("/", response_class=HTMLResponse)
def home(request: Request, engine: EngineDep, session: SessionDep) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return render(
        request,
        "home.html",
        principal,
        venues=_venues(session, principal, with_resources=True),
        roles=sorted(principal.roles),
        staff=principal.has_any(Role.venue_manager, Role.reception),
        kind_one=KIND_ONE,
    )


@dataclass
class VenueView:
    key: str
    name: str
    site: str
    timezone: str
    kinds: list[str] = field(default_factory=list)
    resources: list[ResourceCtx] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # per language, from the site file
    site_names: dict[str, str] = field(default_factory=dict)


def _where_visible(principal: Principal) -> Any:
    """The SQL side of `bms.context.can_see` (managers of the venue, residents and reception of
    the site, admins everywhere): it only narrows what is loaded; `can_see` still decides."""
    if principal.admin:
        return col(Resource.active)
    return col(Resource.active) & (
        col(Venue.site_id).in_(principal.resident_sites | principal.reception_sites)
        | col(Venue.id).in_(principal.managed_venues)
    )


def _venues(session: Session, principal: Principal, *, with_resources: bool = False) -> list[VenueView]:
    """The venues with resources the user may see, with their kinds (and their resources)."""
    stmt = (
        select(Resource)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .where(_where_visible(principal))
        .order_by(col(Resource.key))
    )
    out: dict[str, VenueView] = {}
    for ctx in load_many(session, list(session.exec(stmt).all())):
        if not can_see(principal, ctx):
            continue
        view = out.setdefault(
            ctx.venue.key,
            VenueView(
                ctx.venue.key,
                ctx.venue.name,
                ctx.site.name,
                ctx.site.timezone,
                names=ctx.venue.names,
                site_names=ctx.site.names,
            ),
        )
        if ctx.resource.kind not in view.kinds:
            view.kinds.append(ctx.resource.kind)
        if with_resources:
            view.resources.append(ctx)
    return sorted(out.values(), key=lambda v: (v.site, v.name))


def _venue_list(session: Session, principal: Principal) -> list[VenueView]:
    """The venue picker of the calendar: names and kinds in one query, no resource loaded."""
    rows = session.execute(
        sa_select(
            col(Venue.key),
            col(Venue.name),
            col(Site.name),
            col(Site.timezone),
            col(Resource.kind),
            col(Venue.names),
            col(Site.names),
        )
        .select_from(Resource)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .join(Site, col(Site.id) == Venue.site_id)
        .where(_where_visible(principal))
        .distinct()
    ).all()
    out: dict[str, VenueView] = {}
    for key, name, site, timezone, kind, names, site_names in rows:
        view = out.setdefault(key, VenueView(key, name, site, timezone, names=names, site_names=site_names))
        view.kinds = sorted({*view.kinds, kind})
    return sorted(out.values(), key=lambda v: (v.site, v.name))


# ---------------------------------------------------------------- find a slot


@dataclass
class SlotView:
    start: datetime
    end: datetime
    state: str  # free, limited, full, mine, pending
    available: int
    href: str | None


def _slot_href(resource: str, start: datetime) -> str:
    return f"/book/new?resource={quote(resource)}&start={start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _mine(
    session: Session, principal: Principal, start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """The user's own live bookings in a range (planned by them or naming them), by resource key,
    to colour the calendar. Two index-backed reads, by planner and by beneficiary: the OR of
    `queries.list_for(scope="mine")` makes PostgreSQL scan the whole table (see bench/README)."""
    base = sa_select(
        col(Reservation.id),
        col(Reservation.resource_id),
        col(Reservation.start),
        col(Reservation.end),
        col(Reservation.status),
    ).where(
        col(Reservation.status).in_([s.value for s in ACTIVE]),
        col(Reservation.end) > start,
        col(Reservation.start) < end,
    )
    rows = {r[0]: r for r in session.execute(base.where(col(Reservation.planner_id) == principal.user_id)).all()}
    named = base.join(ReservationBeneficiary, col(ReservationBeneficiary.reservation_id) == Reservation.id).where(
        col(ReservationBeneficiary.user_id) == principal.user_id
    )
    rows.update({r[0]: r for r in session.execute(named).all()})
    if not rows:
        return {}
    keys = dict(
        session.exec(select(Resource.id, Resource.key).where(col(Resource.id).in_({r[1] for r in rows.values()}))).all()
    )
    out: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for _id, resource_id, a, z, status in rows.values():
        out[keys[resource_id]].append((a, z, status))
    return out


def _slot_views(
    avail: availability.ResourceAvailability,
    mine: list[tuple[datetime, datetime, str]],
    now: datetime,
    bookable: bool,
) -> list[SlotView]:
    out = []
    for s in avail.slots:
        if s.start < now:  # begun or over: nothing to book or to see
            continue
        state = s.status
        own = [st for a, z, st in mine if a < s.end and s.start < z]
        if own:
            state = "pending" if all(st == Status.pending for st in own) else "mine"
        can = bookable and s.start >= now and state in ("free", "limited")
        out.append(SlotView(s.start, s.end, state, s.available, _slot_href(avail.resource, s.start) if can else None))
    return out


def _bookable(principal: Principal, ctx: ResourceCtx) -> bool:
    try:
        require_can_book(principal, ctx)
    except AppError:
        return False
    return True


def _parse_day(value: str | None, tz: ZoneInfo) -> date:
    today = utcnow().astimezone(tz).date()
    if not value:
        return today
    try:
        return date.fromisoformat(value)
    except ValueError:
        return today


@router.get("/book", response_class=HTMLResponse)
def find_slot(
    request: Request,
    engine: EngineDep,
    session: SessionDep,
    venue: str | None = None,
    kind: str | None = None,
    day: str | None = None,
) -> Response:
    """A venue's day: each resource's slots, coloured by state, and the nearest free times first."""
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    venues = _venue_list(session, principal)
    kinds = sorted({k for v in venues for k in v.kinds})
    if kind not in kinds:
        kind = None
    shown = [v for v in venues if kind is None or kind in v.kinds]
    chosen = next((v for v in shown if v.key == venue), shown[0] if shown else None)
    rows: list[tuple[ResourceCtx, list[SlotView]]] = []
    next_free: list[tuple[ResourceCtx, SlotView]] = []
    tz = ZoneInfo(chosen.timezone) if chosen else ZoneInfo("UTC")
    the_day = _parse_day(day, tz)
    if chosen is not None:
        ctx_list = [
            c
            for c in availability.venue_contexts(session, principal, chosen.key)
            if kind is None or c.resource.kind == kind
        ]
        now = utcnow()
        start = datetime.combine(the_day, time.min, tz)
        today = now.astimezone(tz).date()
        mine = _mine(session, principal, min(start, now) - timedelta(days=1), max(start, now) + timedelta(days=8))
        by_key = {c.resource.key: c for c in ctx_list}
        bookable = {c.resource.key: _bookable(principal, c) for c in ctx_list}
        day_avail = availability.venue_availability(session, ctx_list, the_day)
        for a in day_avail:
            rows.append((by_key[a.resource], _slot_views(a, mine.get(a.resource, []), now, bookable[a.resource])))
        next_free = _nearest_free(
            session,
            [c for c in ctx_list if bookable[c.resource.key]],
            now,
            tz,
            mine,
            day_avail if the_day == today else None,
        )
    return render(
        request,
        "book.html",
        principal,
        venues=shown,
        venue=chosen,
        kinds=kinds,
        kind=kind,
        kind_names=KINDS,
        kind_one=KIND_ONE,
        day=the_day,
        tz=tz,
        prev_day=(the_day - timedelta(days=1)).isoformat(),
        next_day=(the_day + timedelta(days=1)).isoformat(),
        rows=rows,
        next_free=next_free,
        slot_labels=SLOT_LABELS,
    )


def _nearest_free(
    session: Session,
    bookable: list[ResourceCtx],
    now: datetime,
    tz: ZoneInfo,
    mine: dict[str, list[tuple[datetime, datetime, str]]],
    today: list[availability.ResourceAvailability] | None,
) -> list[tuple[ResourceCtx, SlotView]]:
    """The first free slots from now on, across the venue's bookable resources (a week ahead at
    most); `today`, when the page shows today, is that day's availability, not read twice."""
    found: list[tuple[ResourceCtx, SlotView]] = []
    by_key = {c.resource.key: c for c in bookable}
    day = now.astimezone(tz).date()
    for i in range(7):
        if not bookable:
            break
        avail = today if i == 0 and today is not None else availability.venue_availability(session, bookable, day)
        for a in avail:
            if a.resource not in by_key:
                continue
            for s in _slot_views(a, mine.get(a.resource, []), now, True):
                if s.href is not None:
                    found.append((by_key[a.resource], s))
        if len(found) >= NEXT_FREE:
            break
        day += timedelta(days=1)
    found.sort(key=lambda x: (x[1].start, x[0].resource.key))
    return found[:NEXT_FREE]


@router.get("/book/resource/{key}", response_class=HTMLResponse)
def resource_week(
    request: Request, engine: EngineDep, session: SessionDep, key: str, week: str | None = None
) -> Response:
    """One resource's week, day by day."""
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    ctx = visible_resource(session, principal, key)
    tz = ctx.rules.tz
    first = _parse_day(week, tz)
    start = datetime.combine(first, time.min, tz)
    end = datetime.combine(first + timedelta(days=7), time.min, tz)
    avail = availability.resource_availability(session, ctx, start, end)
    now = utcnow()
    mine = _mine(session, principal, start - timedelta(days=1), end)
    slots = _slot_views(avail, mine.get(key, []), now, _bookable(principal, ctx))
    days: dict[date, list[SlotView]] = {first + timedelta(days=i): [] for i in range(7)}
    for s in slots:
        days.setdefault(s.start.astimezone(tz).date(), []).append(s)
    return render(
        request,
        "week.html",
        principal,
        ctx=ctx,
        tz=tz,
        days=days,
        first=first,
        prev_week=(first - timedelta(days=7)).isoformat(),
        next_week=(first + timedelta(days=7)).isoformat(),
        slot_labels=SLOT_LABELS,
        kind_one=KIND_ONE,
    )


# ---------------------------------------------------------------- book


def _durations(ctx: ResourceCtx, start: datetime) -> list[tuple[int, datetime]]:
    """The lengths the rules allow, on the grid: (minutes, end)."""
    step = ctx.rules.slot
    out: list[tuple[int, datetime]] = []
    length = step
    while length <= ctx.rules.max_len and len(out) < 48:
        if length >= ctx.rules.min_len:
            out.append((int(length.total_seconds() // 60), start + length))
        length += step
    return out


def _parse_start(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("bad_start", "not a time", field="start") from None
    if parsed.tzinfo is None:
        raise Invalid("timezone_aware", "give times with a UTC offset", field="start")
    return parsed.astimezone(UTC)


def _booking_form(
    request: Request,
    principal: Principal,
    ctx: ResourceCtx,
    start: datetime,
    *,
    status: int = 200,
    token: str | None = None,
    values: dict[str, Any] | None = None,
    refusal: Refusal | None = None,
) -> HTMLResponse:
    durations = _durations(ctx, start)
    default = next((m for m, _ in durations if m * 60 >= ctx.rules.slot.total_seconds()), None)
    return render(
        request,
        "book_confirm.html",
        principal,
        status=status,
        ctx=ctx,
        tz=ctx.rules.tz,
        start=start,
        start_value=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        durations=durations,
        values={
            "minutes": default,
            "places": 1,
            "beneficiaries": "",
            "note": "",
            "repeat": 0,
            "count": 4,
            **(values or {}),
        },
        token=token or new_form_token(),
        refusal=refusal,
        moderated=ctx.rules.moderation != "auto",
        kind_one=KIND_ONE,
    )


@router.get("/book/new", response_class=HTMLResponse)
def booking_form(request: Request, engine: EngineDep, session: SessionDep, resource: str, start: str) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    ctx = visible_resource(session, principal, resource)
    return _booking_form(request, principal, ctx, _parse_start(start))


def _beneficiary_ids(session: Session, text: str) -> list[int]:
    """Beneficiaries named by e-mail; who may be one is the service's rule (residents of the site).
    An address that matches nobody is refused with the same words as a non-resident."""
    emails = sorted({e.strip().lower() for e in text.replace(",", "\n").splitlines() if e.strip()})
    if not emails:
        return []
    found = dict(session.exec(select(User.email, User.id).where(col(User.email).in_(emails))).all())
    missing = [e for e in emails if e not in found]
    if missing:
        raise Invalid("unknown_beneficiary", f"{missing[0]} is not a resident of this site", field="beneficiaries")
    return [int(found[e] or 0) for e in emails]  # ids of stored users: never None


@router.post("/book/new")
def book(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    resource: Annotated[str, Form(max_length=63)],
    start: Annotated[str, Form(max_length=40)],
    minutes: Annotated[int, Form(ge=1, le=100_000)],
    token: Annotated[str, Form(min_length=16, max_length=64)],
    places: Annotated[int, Form(ge=1, le=10_000)] = 1,
    beneficiaries: Annotated[str, Form(max_length=5000)] = "",
    note: Annotated[str, Form(max_length=1000)] = "",
    repeat: Annotated[int, Form(ge=0, le=4)] = 0,
    count: Annotated[int, Form(ge=2, le=52)] = 4,
) -> Response:
    """Book one slot (at most once per form), or a weekly series of `count` occurrences every
    `repeat` weeks (the API's series: every occurrence checked, none booked if one is refused)."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    ctx = visible_resource(session, principal, resource)
    begin = _parse_start(start)
    values = {
        "minutes": minutes,
        "places": places,
        "beneficiaries": beneficiaries,
        "note": note,
        "repeat": repeat,
        "count": count,
    }
    try:
        data = service.ReservationCreate(
            resource=resource,
            start=begin,
            end=begin + timedelta(minutes=minutes),
            beneficiaries=_beneficiary_ids(session, beneficiaries),
            places=places,
            note=note,
        )
        if repeat:
            series = recurrence.SeriesCreate(
                **data.model_dump(), rrule=f"FREQ=WEEKLY;INTERVAL={repeat};COUNT={count}", conflict="fail"
            )
            made = recurrence.create_series(session, principal, series, policies=policies_of(request))
            return RedirectResponse(f"/reservations?done=series#s{made.series_id}", status_code=303)
        out = service.create_once(session, principal, data, f"portal-{token}", policies=policies_of(request))
    except AppError as exc:
        refusal = Refusal.of(exc, "start")
        raise ShowPage(
            _booking_form(
                request, principal, ctx, begin, status=exc.status, token=token, values=values, refusal=refusal
            )
        ) from exc
    if isinstance(out, service.Replay):  # the same form sent again: the first answer
        status_ = out.body.get("status", Status.confirmed)
        rid = out.body.get("id")
    else:
        status_, rid = out.status, out.id
    done = "requested" if status_ == Status.pending else "booked"
    return RedirectResponse(f"/reservations?done={done}#r{rid}", status_code=303)


# ---------------------------------------------------------------- my reservations


@dataclass
class Row:
    r: queries.ReservationPublic
    name: str
    tz: ZoneInfo
    proposal: ChangeProposal | None = None
    names: dict[str, str] = field(default_factory=dict)  # the resource's, per language


def _rows(session: Session, items: list[queries.ReservationPublic]) -> list[Row]:
    found = session.exec(
        select(Resource.key, Resource.name, Resource.names).where(col(Resource.key).in_({i.resource for i in items}))
    ).all()
    names = {key: name for key, name, _ in found}
    local = {key: per_language for key, _, per_language in found}
    pending = [i.id for i in items if i.status == Status.pending]
    proposals: dict[int, ChangeProposal] = {}
    if pending:
        for p in session.exec(
            select(ChangeProposal)
            .where(col(ChangeProposal.reservation_id).in_(pending), col(ChangeProposal.status) == "open")
            .order_by(col(ChangeProposal.id))
        ).all():
            proposals[p.reservation_id] = p
    return [
        Row(
            i,
            names.get(i.resource, i.resource),
            ZoneInfo(i.timezone),
            proposals.get(i.id),
            dict(local.get(i.resource) or {}),
        )
        for i in items
    ]


@router.get("/reservations", response_class=HTMLResponse)
def my_reservations(request: Request, engine: EngineDep, session: SessionDep) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    now = utcnow()
    live = queries.public_many(
        session,
        queries.list_for(session, principal, scope="mine", status=[s.value for s in ACTIVE], start_from=now, limit=500),
    )
    # Past: what has ended, and what was closed before it began (cancelled, refused, lapsed).
    ended = queries.list_for(session, principal, scope="mine", start_to=now, limit=500)
    closed = queries.list_for(
        session, principal, scope="mine", status=[s.value for s in CLOSED], start_from=now, limit=500
    )
    past_rows = sorted(
        [r for r in ended if r.end <= now or r.status not in ACTIVE] + closed, key=lambda r: r.start, reverse=True
    )
    past = queries.public_many(session, past_rows[:20])
    return render(
        request,
        "reservations.html",
        principal,
        upcoming=_rows(session, [r for r in live if r.status in HOLDING]),
        pending=_rows(session, [r for r in live if r.status == Status.pending]),
        past=_rows(session, past),
        status_labels=STATUS_LABELS,
        notice=NOTICES.get(request.query_params.get("done", "")),
        me_id=principal.user_id,
    )


def _own(session: Session, principal: Principal, reservation_id: int) -> Row:
    r, ctx = queries.get_visible(session, principal, reservation_id)
    return _rows(session, [queries.public(session, r, ctx)])[0]


def _action_page(
    request: Request,
    principal: Principal,
    name: str,
    row: Row,
    *,
    status: int = 200,
    refusal: Refusal | None = None,
    **ctx: Any,
) -> HTMLResponse:
    return render(request, name, principal, status=status, row=row, refusal=refusal, status_labels=STATUS_LABELS, **ctx)


@router.get("/reservations/{reservation_id:int}/calendar.ics")
def booking_ics(request: Request, engine: EngineDep, session: SessionDep, reservation_id: int) -> Response:
    """Add to calendar: the booking as an iCalendar file (the same event the messages attach)."""
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    r, _ctx = queries.get_visible(session, principal, reservation_id)
    return Response(
        reservation_ics(session, r),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="booking-{reservation_id}.ics"'},
    )


@router.get("/reservations/{reservation_id:int}/cancel", response_class=HTMLResponse)
def cancel_page(request: Request, engine: EngineDep, session: SessionDep, reservation_id: int) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _action_page(request, principal, "cancel.html", _own(session, principal, reservation_id))


@router.post("/reservations/{reservation_id:int}/cancel")
def cancel(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    reservation_id: int,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    try:
        service.cancel(session, principal, reservation_id, reason or "cancelled by user")
    except AppError as exc:
        row = _own(session, principal, reservation_id)
        raise ShowPage(
            _action_page(request, principal, "cancel.html", row, status=exc.status, refusal=Refusal.of(exc, "reason"))
        ) from exc
    return RedirectResponse("/reservations?done=cancelled", status_code=303)


def _local_times(row: Row) -> dict[str, str]:
    start, end = row.r.start.astimezone(row.tz), row.r.end.astimezone(row.tz)
    return {"date": start.date().isoformat(), "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


@router.get("/reservations/{reservation_id:int}/reschedule", response_class=HTMLResponse)
def reschedule_page(request: Request, engine: EngineDep, session: SessionDep, reservation_id: int) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation_id)
    return _action_page(request, principal, "reschedule.html", row, values=_local_times(row))


def _combine(day: str, clock: str, tz: ZoneInfo, field_: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), tz).astimezone(UTC)
    except ValueError:
        raise Invalid("bad_time", "not a date and time", field=field_) from None


@router.post("/reservations/{reservation_id:int}/reschedule")
def reschedule(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    reservation_id: int,
    day: Annotated[str, Form(alias="date", max_length=10)],
    start: Annotated[str, Form(max_length=8)],
    end: Annotated[str, Form(max_length=8)],
) -> Response:
    """New local times on the same resource; a change a manager must see is held, not applied."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation_id)
    try:
        begin = _combine(day, start, row.tz, "start")
        finish = _combine(day, end, row.tz, "end")
        if finish <= begin:  # ends after midnight
            finish += timedelta(days=1)
            finish = datetime.combine(finish.astimezone(row.tz).date(), time.fromisoformat(end), row.tz).astimezone(UTC)
        r = service.reschedule(session, principal, reservation_id, begin, finish, policies=policies_of(request))
    except AppError as exc:
        raise ShowPage(
            _action_page(
                request,
                principal,
                "reschedule.html",
                row,
                status=exc.status,
                refusal=Refusal.of(exc, "start"),
                values={"date": day, "start": start, "end": end},
            )
        ) from exc
    held = queries.public(session, r).pending_change is not None
    return RedirectResponse(f"/reservations?done={'move_requested' if held else 'moved'}", status_code=303)


@router.get("/reservations/{reservation_id:int}/duplicate", response_class=HTMLResponse)
def duplicate_page(request: Request, engine: EngineDep, session: SessionDep, reservation_id: int) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation_id)
    next_week = (row.r.start.astimezone(row.tz).date() + timedelta(days=7)).isoformat()
    return _action_page(request, principal, "duplicate.html", row, values={"date": next_week}, refused=[])


@router.post("/reservations/{reservation_id:int}/duplicate")
def duplicate(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    reservation_id: int,
    day: Annotated[str, Form(alias="date", max_length=10)],
) -> Response:
    """The same local times on another date; each copy is checked like a new booking."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation_id)
    try:
        try:
            data = service.DuplicateIn(dates=[date.fromisoformat(day)])
        except ValueError:
            raise Invalid("bad_time", "not a date", field="date") from None
        out = service.duplicate(session, principal, reservation_id, data, policies=policies_of(request))
    except AppError as exc:
        raise ShowPage(
            _action_page(
                request,
                principal,
                "duplicate.html",
                row,
                status=exc.status,
                refusal=Refusal.of(exc, "date"),
                values={"date": day},
                refused=[],
            )
        ) from exc
    if not out.made:
        refused = out.refused[0]  # one date asked: one answer
        refusal = Refusal("date", REASONS.get(refused.code or "", N_("This was refused.")), refused.message or "")
        raise ShowPage(
            _action_page(
                request,
                principal,
                "duplicate.html",
                row,
                status=409,
                refusal=refusal,
                values={"date": day},
                refused=out.refused,
            )
        )
    return RedirectResponse("/reservations?done=duplicated", status_code=303)


@router.post("/proposals/{proposal_id:int}/{answer}")
def answer_proposal(
    request: Request, engine: EngineDep, session: WriteSessionDep, proposal_id: int, answer: str
) -> Response:
    """The requester accepts or declines a manager's proposal (other times or another unit)."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    if answer == "accept":
        moderation_service.accept(session, principal, proposal_id)
    elif answer == "decline":
        moderation_service.decline(session, principal, proposal_id)
    else:
        raise NotFound("not_found", "no such answer")
    return RedirectResponse(f"/reservations?done={answer}ed", status_code=303)


def _in_series(row: Row, series_id: int, reservation: int, *, dated: bool = False) -> str:
    """The reservation must be an occurrence of this series (with its occurrence date, to change
    it); returns that date's key."""
    if row.r.series_id != series_id or (dated and row.r.occurrence_key is None):
        raise NotFound("reservation_not_found", f"no reservation {reservation} in this series")
    return row.r.occurrence_key or ""


@router.get("/series/{series_id:int}/cancel", response_class=HTMLResponse)
def series_cancel_page(
    request: Request, engine: EngineDep, session: SessionDep, series_id: int, reservation: int
) -> Response:
    """Cancel a series from one occurrence on (that one included)."""
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation)
    _in_series(row, series_id, reservation)
    return _action_page(request, principal, "series_cancel.html", row)


@router.post("/series/{series_id:int}/cancel")
def series_cancel(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    series_id: int,
    reservation: Annotated[int, Form()],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation)
    try:
        occurrence = _in_series(row, series_id, reservation, dated=True)
        data = recurrence.SeriesCancel(
            scope="following", from_occurrence=occurrence, reason=reason or "cancelled by user"
        )
        recurrence.cancel_series(session, principal, series_id, data)
    except AppError as exc:
        raise ShowPage(
            _action_page(
                request, principal, "series_cancel.html", row, status=exc.status, refusal=Refusal.of(exc, "reason")
            )
        ) from exc
    return RedirectResponse("/reservations?done=series_cancelled", status_code=303)


@router.get("/series/{series_id:int}/edit", response_class=HTMLResponse)
def series_edit_page(
    request: Request, engine: EngineDep, session: SessionDep, series_id: int, reservation: int
) -> Response:
    """New times for every occurrence, or for this one and the following ones."""
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation)
    _in_series(row, series_id, reservation)
    times = _local_times(row)
    return _action_page(request, principal, "series_edit.html", row, values={**times, "scope": "following"})


@router.post("/series/{series_id:int}/edit")
def series_edit(
    request: Request,
    engine: EngineDep,
    session: WriteSessionDep,
    series_id: int,
    reservation: Annotated[int, Form()],
    start: Annotated[str, Form(max_length=8)],
    end: Annotated[str, Form(max_length=8)],
    scope: Annotated[str, Form(pattern="^(all|following)$")] = "following",
) -> Response:
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    row = _own(session, principal, reservation)
    values = {"start": start, "end": end, "scope": scope}
    try:
        occurrence = _in_series(row, series_id, reservation, dated=True)
        series, _rows = recurrence.get_series(session, principal, series_id)
        # The new times from the first occurrence concerned: the series' first, or this one.
        first = series.dtstart_local if scope == "all" else occurrence
        day = first[:10]
        begin = _combine(day, start, row.tz, "start")
        finish = _combine(day, end, row.tz, "end")
        data = recurrence.SeriesUpdate(
            scope="all" if scope == "all" else "following",
            from_occurrence=occurrence if scope == "following" else None,
            start=begin,
            end=finish,
        )
        recurrence.update_series(session, principal, series_id, data, policies=policies_of(request))
    except AppError as exc:
        raise ShowPage(
            _action_page(
                request,
                principal,
                "series_edit.html",
                row,
                status=exc.status,
                refusal=Refusal.of(exc, "start"),
                values=values,
            )
        ) from exc
    return RedirectResponse("/reservations?done=series_moved", status_code=303)
