"""Venue managers' pages, and the doors board they share with reception.

- `/moderation`: the queue of requests of the caller's venues with what a decision needs, each
  decided (approve, reject with a reason, approve with a change, several at once), and the
  re-approval queue of changed bookings.
- `/manage`: their venues' resources, each resource's own rules (the rules PATCH as a form) and
  blackouts, and the venues' documents.
- `/doors`: controllers' live state, the doors with their grants and the door events, kept up to
  date by a server-sent-event stream (`/doors/stream`) that `doors.js` applies in place.

Every page goes through the domain services, which hold the rules and the object-level checks
(a venue the caller does not manage is 404 there): a page parses forms and shapes answers only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from access import events as access_events
from access import service as access_service
from access.levels import source_labels
from access.models import Controller, Door
from bms import resources as bms_resources
from bms import stats as bms_stats
from bms.booking import load_resource
from bms.models import Reservation, Resource
from config.site import Blackout, Rules
from core.auth import Principal
from core.db import ident, open_session, utcnow, write_session
from core.deps import EngineDep
from core.errors import AppError, Invalid
from core.i18n import N_, local_name, translator
from core.models import Role, Site, User
from moderation import documents
from moderation import service as moderation
from moderation.scope import managed_resource, managed_venue
from portal.layout import NAV, NavItem, check_origin, current, page_locale, render, require_page

router = APIRouter(include_in_schema=False)

NAV.append(NavItem("/moderation", N_("Moderation"), (Role.venue_manager.value,)))
NAV.append(NavItem("/manage", N_("My venues"), (Role.venue_manager.value,)))

STAFF = (Role.venue_manager, Role.reception)
EVENT_KINDS = ("granted", "denied", "forced", "held_open", "tamper", "unknown")
# How often the doors stream looks for news, and re-checks that its viewer is still signed in.
POLL_SECONDS = 1.0
RECHECK_SECONDS = 15.0


# ---------------------------------------------------------------- form helpers (shared by admin, reports)


# The words for the domains' values that pages show (`t(labels.get(value, value))` in templates).
VALUE_LABELS = {
    "court": N_("court"),
    "room": N_("room"),
    "parking": N_("parking"),
    "equipment": N_("equipment"),
    "auto": N_("automatic"),
    "manual": N_("by a manager"),
    "rules": N_("by the moderation rules"),
    "house_rules": N_("house rules"),
    "access_instructions": N_("access instructions"),
    "other": N_("other"),
    "admin": N_("admin"),
    "venue_manager": N_("venue manager"),
    "reception": N_("reception"),
    "resident": N_("resident"),
    "badge": N_("badge"),
    "pin": N_("PIN"),
    "qr": N_("QR code"),
    "key": N_("key"),
    "ble": N_("phone key"),
    "online": N_("online"),
    "offline": N_("offline"),
    "degraded": N_("degraded"),
    "unknown": N_("unknown"),
}


def page(request: Request, name: str, principal: Principal, status: int = 200, **ctx: Any) -> HTMLResponse:
    """`layout.render` with the words for the domains' values."""
    return render(request, name, principal, status=status, labels=VALUE_LABELS, **ctx)


# The signed-in user holding one of the roles, or the answer to give instead (sign-in page, 403).
guard = require_page


def problems(exc: Exception) -> list[str]:
    """A refusal as the lines a form shows: `path.to.field: reason`."""
    if isinstance(exc, ValidationError):
        return [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else str(e["msg"]) for e in exc.errors()
        ]
    if isinstance(exc, AppError):
        errors = exc.extra.get("errors")
        if isinstance(errors, list) and errors:
            return [f"{e.get('field')}: {e.get('message')}" for e in errors]
        return [f"{exc.field}: {exc.message}" if exc.field else exc.message]
    raise exc


def attempt(engine: Any, work: Callable[[Session], Any]) -> tuple[Any, list[str], int]:
    """Run `work` in one unit of work: (its result, [], 200), or (None, the problems, the status)."""
    try:
        with write_session(engine) as s:
            return work(s), [], 200
    except (AppError, ValidationError) as exc:
        return None, problems(exc), getattr(exc, "status", 422)


def done(path: str, what: str, **query: str) -> RedirectResponse:
    """Post/redirect/get: the page again, saying what was done."""
    return RedirectResponse(f"{path}?{urlencode({'done': what, **query})}", status_code=303)


def notice(request: Request, messages: dict[str, str], principal: Principal) -> str | None:
    key = request.query_params.get("done")
    if key not in messages:
        return None
    return translator(page_locale(request, principal))(messages[key])


def local_input(value: str, tz: tzinfo, field_name: str) -> datetime:
    """A `datetime-local` field, read in the site's zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("bad_time", "not a date and time", status=422, field=field_name) from None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# ---------------------------------------------------------------- moderation queue


QUEUE_DONE = {
    "approved": N_("The request is approved."),
    "rejected": N_("The request is rejected."),
    "proposed": N_("Your proposal is sent to the requester."),
    "bulk": N_("The selected requests are decided."),
    "change_approved": N_("The change is approved."),
    "change_rejected": N_("The change is rejected."),
}


def _version(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _queue_page(
    request: Request,
    engine: Any,
    principal: Principal,
    *,
    venue: str | None = None,
    errors: list[str] | None = None,
    failed: int | None = None,
    status: int = 200,
    results: list[moderation.BulkResult] | None = None,
) -> Response:
    with open_session(engine) as s:
        items = moderation.queue(s, principal, venue=venue or None, limit=200)
        changes = moderation.list_changes(s, principal, venue or None)
        venues = bms_stats.managed_venues(s, principal)
        keys = {i.reservation.resource for i in items} | {c.reservation.resource for c in changes}
        res = {r.key: r for r in s.exec(select(Resource).where(col(Resource.key).in_(keys))).all()} if keys else {}
        ctxs = {k: load_resource(s, k) for k in {i.reservation.resource for i in items}}
        units = {k: [u.key for u in c.units] for k, c in ctxs.items()}
        modes = {k: str(c.rules.moderation) for k, c in ctxs.items()}
        requesters = {c.requested_by for c in changes}
        names = (
            {u.id: u.name for u in s.exec(select(User).where(col(User.id).in_(requesters))).all()} if requesters else {}
        )
    return page(
        request,
        "manager_queue.html",
        principal,
        status=status,
        items=items,
        changes=changes,
        venues=venues,
        venue=venue or "",
        resources=res,
        units=units,
        modes=modes,
        names=names,
        errors=errors or [],
        failed=failed,
        results=results or [],
        zone=zone,
        notice=notice(request, QUEUE_DONE, principal),
    )


@router.get("/moderation", response_class=HTMLResponse)
def queue_page(request: Request, engine: EngineDep, venue: Annotated[str, Query(max_length=63)] = "") -> Response:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _queue_page(request, engine, principal, venue=venue)


def _decided(
    request: Request, engine: Any, principal: Principal, rid: int, work: Callable[[Session], Any], what: str
) -> Response:
    _, errors, status = attempt(engine, work)
    if errors:
        return _queue_page(request, engine, principal, errors=errors, failed=rid, status=status)
    return done("/moderation", what)


@router.post("/moderation/{rid}/approve")
def approve(
    request: Request,
    engine: EngineDep,
    rid: int,
    version: Annotated[str, Form(max_length=64)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _decided(
        request,
        engine,
        principal,
        rid,
        lambda s: moderation.approve(s, principal, rid, moderation.Decision(note=note, version=_version(version))),
        "approved",
    )


@router.post("/moderation/{rid}/reject")
def reject(
    request: Request,
    engine: EngineDep,
    rid: int,
    version: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _decided(
        request,
        engine,
        principal,
        rid,
        lambda s: moderation.reject(s, principal, rid, moderation.Rejection(reason=reason, version=_version(version))),
        "rejected",
    )


@router.post("/moderation/{rid}/propose")
def propose(
    request: Request,
    engine: EngineDep,
    rid: int,
    start: Annotated[str, Form(max_length=32)],
    end: Annotated[str, Form(max_length=32)],
    reason: Annotated[str, Form(max_length=500)] = "",
    unit: Annotated[str, Form(max_length=80)] = "",
    version: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Approve with a change: the times are read in the site's zone."""
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal

    def work(s: Session) -> Any:
        tz = zone(moderation.get_item(s, principal, rid).reservation.timezone)
        data = moderation.ProposalCreate(
            start=local_input(start, tz, "start"),
            end=local_input(end, tz, "end"),
            unit=unit or None,
            reason=reason,
            version=_version(version),
        )
        return moderation.propose(s, principal, rid, data)

    return _decided(request, engine, principal, rid, work, "proposed")


@router.post("/moderation/bulk")
async def bulk(request: Request, engine: EngineDep) -> Response:
    """Several requests at once; each is decided (or refused) on its own, as the API does."""
    check_origin(request)
    principal = await run_in_threadpool(guard, request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    form = await request.form()
    ids = [int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()][:200]
    action = str(form.get("action") or "")
    reason = str(form.get("reason") or "")[:500]

    def run() -> Response:
        if not ids:
            return _queue_page(
                request,
                engine,
                principal,
                errors=[translator(page_locale(request, principal))("Select at least one request.")],
                status=422,
            )
        try:
            data = moderation.BulkDecision(
                decisions=[
                    moderation.BulkItem(
                        reservation_id=i,
                        action=action,
                        reason=reason,
                        version=_version(str(form.get(f"version-{i}") or "")),
                    )
                    for i in ids
                ]
            )
        except ValidationError as exc:
            return _queue_page(request, engine, principal, errors=problems(exc), status=422)
        results, errors, status = attempt(engine, lambda s: moderation.bulk(s, principal, data))
        if errors:
            return _queue_page(request, engine, principal, errors=errors, status=status)
        if all(r.ok for r in results):
            return done("/moderation", "bulk")
        return _queue_page(request, engine, principal, results=results, status=409)

    return await run_in_threadpool(run)


@router.post("/moderation/changes/{change_id}/approve")
def approve_change(request: Request, engine: EngineDep, change_id: int) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _decided(
        request,
        engine,
        principal,
        change_id,
        lambda s: moderation.approve_change(s, principal, change_id),
        "change_approved",
    )


@router.post("/moderation/changes/{change_id}/reject")
def reject_change(
    request: Request, engine: EngineDep, change_id: int, reason: Annotated[str, Form(max_length=500)] = ""
) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _decided(
        request,
        engine,
        principal,
        change_id,
        lambda s: moderation.reject_change(s, principal, change_id, moderation.ChangeRejection(reason=reason)),
        "change_rejected",
    )


# ---------------------------------------------------------------- venues, resources, rules, documents


MANAGE_DONE = {
    "rules": N_("The rules are saved."),
    "blackout_added": N_("The blackout is added."),
    "blackout_removed": N_("The blackout is removed."),
    "uploaded": N_("The document is added."),
    "removed": N_("The document is removed."),
}

# The rules a manager may set per resource, as form fields: (name, kind)
RULE_FIELDS: list[tuple[str, str]] = [
    ("slot_minutes", "int"),
    ("min_minutes", "int"),
    ("max_minutes", "int"),
    ("buffer_minutes", "int"),
    ("notice_min_minutes", "int"),
    ("notice_max_days", "int"),
    ("change_deadline_minutes", "int"),
    ("max_changes", "int"),
    ("max_beneficiaries", "int"),
    ("max_active_per_user", "int"),
    ("pending_expiry_hours", "int"),
    ("self_service", "bool"),
    ("moderation", "choice"),
]
RULE_LABELS = {
    "slot_minutes": N_("Slot length (minutes)"),
    "min_minutes": N_("Shortest booking (minutes)"),
    "max_minutes": N_("Longest booking (minutes)"),
    "buffer_minutes": N_("Buffer between bookings (minutes)"),
    "notice_min_minutes": N_("Book at least this long ahead (minutes)"),
    "notice_max_days": N_("Book at most this far ahead (days)"),
    "change_deadline_minutes": N_("Changes allowed until (minutes before the start)"),
    "max_changes": N_("Changes allowed per booking"),
    "max_beneficiaries": N_("Beneficiaries per booking"),
    "max_active_per_user": N_("Future bookings per person"),
    "pending_expiry_hours": N_("A request lapses after (hours)"),
    "self_service": N_("Residents book themselves"),
    "moderation": N_("Moderation"),
    "opening_hours": N_("Opening hours"),
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_LABELS = {
    "mon": N_("Monday"),
    "tue": N_("Tuesday"),
    "wed": N_("Wednesday"),
    "thu": N_("Thursday"),
    "fri": N_("Friday"),
    "sat": N_("Saturday"),
    "sun": N_("Sunday"),
}


@router.get("/manage", response_class=HTMLResponse)
def venues_page(request: Request, engine: EngineDep) -> Response:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    with open_session(engine) as s:
        venues = bms_stats.managed_venues(s, principal)
        listing = {v.key: bms_resources.listing(s, principal, v.key) for v in venues}
        sites = {x.id: x for x in s.exec(select(Site)).all()}
    return page(request, "manager_venues.html", principal, venues=venues, listing=listing, sites=sites)


def _venue_page(
    request: Request, engine: Any, principal: Principal, key: str, errors: list[str] | None = None, status: int = 200
) -> Response:
    with open_session(engine) as s:
        venue = managed_venue(s, principal, key)  # 404 for a venue that is not theirs
        resources = bms_resources.listing(s, principal, key)
        docs = [documents.public(d, venue.key, None) for d in documents.listing(s, venue, None)]
        site = s.get(Site, venue.site_id)
    return page(
        request,
        "manager_venue.html",
        principal,
        status=status,
        venue=venue,
        site=site,
        resources=resources,
        docs=docs,
        kinds=[k.value for k in documents.DocumentKind],
        errors=errors or [],
        zone=zone,
        notice=notice(request, MANAGE_DONE, principal),
    )


@router.get("/manage/venues/{key}", response_class=HTMLResponse)
def venue_page(request: Request, engine: EngineDep, key: str) -> Response:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _venue_page(request, engine, principal, key)


def _resource_page(
    request: Request,
    engine: Any,
    principal: Principal,
    key: str,
    *,
    errors: list[str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    with open_session(engine) as s:
        ctx = managed_resource(s, principal, key)  # 404 unseen, 403 seen but not managed
        effective = bms_resources.public(ctx)
        own = dict(ctx.resource.rules)
        docs = [documents.public(d, ctx.venue.key, key) for d in documents.listing(s, ctx.venue, ctx) if d.resource_id]
        tz = zone(ctx.site.timezone)
    form = values or {
        name: ("" if own.get(name) is None else str(own[name]).lower() if kind == "bool" else str(own[name]))
        for name, kind in RULE_FIELDS
    }
    if values is None:
        for day in WEEKDAYS:
            hours = (own.get("opening_hours") or {}).get(day)
            form[f"hours_{day}"] = "" if hours is None else ", ".join(hours)
    blackouts = [Blackout.model_validate(b) for b in own.get("blackouts") or []]
    return page(
        request,
        "manager_resource.html",
        principal,
        status=status,
        ctx=ctx,
        effective=effective.rules,
        own=own,
        form=form,
        fields=RULE_FIELDS,
        rule_labels=RULE_LABELS,
        weekdays=WEEKDAYS,
        weekday_labels=WEEKDAY_LABELS,
        blackouts=blackouts,
        docs=docs,
        kinds=[k.value for k in documents.DocumentKind],
        tz=tz,
        errors=errors or [],
        notice=notice(request, MANAGE_DONE, principal),
    )


@router.get("/manage/resources/{key}", response_class=HTMLResponse)
def resource_page(request: Request, engine: EngineDep, key: str) -> Response:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    return _resource_page(request, engine, principal, key)


def _rules_from_form(form: dict[str, str]) -> Rules:
    """Every field of the form is sent: an empty one removes the resource's own value (the venue's
    and the site's apply again), as null does in the API's PATCH."""
    data: dict[str, Any] = {}
    for name, kind in RULE_FIELDS:
        raw = form.get(name, "").strip()
        if not raw:
            data[name] = None
        elif kind == "bool":
            data[name] = raw == "true"
        else:
            data[name] = raw
    hours: dict[str, list[str]] = {}
    for day in WEEKDAYS:
        raw = form.get(f"hours_{day}", "").strip()
        if raw:
            hours[day] = [] if raw == "-" else [part.strip() for part in raw.split(",") if part.strip()]
    data["opening_hours"] = hours or None
    return Rules.model_validate(data)


@router.post("/manage/resources/{key}/rules")
async def save_rules(request: Request, engine: EngineDep, key: str) -> Response:
    check_origin(request)
    principal = await run_in_threadpool(guard, request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    form = {k: str(v)[:200] for k, v in (await request.form()).items() if isinstance(v, str)}

    def run() -> Response:
        _, errors, status = attempt(
            engine, lambda s: bms_resources.update_rules(s, principal, key, _rules_from_form(form))
        )
        if errors:
            return _resource_page(request, engine, principal, key, errors=errors, values=form, status=status)
        return done(f"/manage/resources/{key}", "rules")

    return await run_in_threadpool(run)


@router.post("/manage/resources/{key}/blackouts")
def add_blackout(
    request: Request,
    engine: EngineDep,
    key: str,
    start: Annotated[str, Form(max_length=32)],
    end: Annotated[str, Form(max_length=32)],
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A blackout joins the resource's own list, through the same rules PATCH."""
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal

    def work(s: Session) -> Any:
        ctx = managed_resource(s, principal, key)
        tz = zone(ctx.site.timezone)
        new = Blackout(start=local_input(start, tz, "start"), end=local_input(end, tz, "end"), reason=reason)
        listed = [*(ctx.resource.rules.get("blackouts") or []), new.model_dump(mode="json")]
        return bms_resources.update_rules(s, principal, key, Rules.model_validate({"blackouts": listed}))

    _, errors, status = attempt(engine, work)
    if errors:
        return _resource_page(request, engine, principal, key, errors=errors, status=status)
    return done(f"/manage/resources/{key}", "blackout_added")


@router.post("/manage/resources/{key}/blackouts/{index}/delete")
def remove_blackout(request: Request, engine: EngineDep, key: str, index: int) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal

    def work(s: Session) -> Any:
        ctx = managed_resource(s, principal, key)
        listed = list(ctx.resource.rules.get("blackouts") or [])
        if 0 <= index < len(listed):
            del listed[index]
        return bms_resources.update_rules(s, principal, key, Rules.model_validate({"blackouts": listed or None}))

    _, errors, status = attempt(engine, work)
    if errors:
        return _resource_page(request, engine, principal, key, errors=errors, status=status)
    return done(f"/manage/resources/{key}", "blackout_removed")


async def _store(
    request: Request,
    engine: Any,
    venue_key: str | None,
    resource_key: str | None,
    file: UploadFile,
    kind: str,
    title: str,
) -> Response:
    check_origin(request)
    principal = await run_in_threadpool(guard, request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    data = await file.read(documents.MAX_BYTES + 1)
    back = f"/manage/venues/{venue_key}" if venue_key else f"/manage/resources/{resource_key}"

    def run() -> Response:
        try:
            documents.store(
                engine,
                principal,
                venue_key,
                resource_key,
                kind=documents.DocumentKind(kind)
                if kind in documents.DocumentKind.__members__
                else documents.DocumentKind.house_rules,
                title=title,
                filename=file.filename or "",
                declared_type=file.content_type,
                data=data,
            )
        except AppError as exc:
            if venue_key:
                return _venue_page(request, engine, principal, venue_key, errors=problems(exc), status=exc.status)
            return _resource_page(
                request, engine, principal, resource_key or "", errors=problems(exc), status=exc.status
            )
        return done(back, "uploaded")

    return await run_in_threadpool(run)


@router.post("/manage/venues/{key}/documents")
async def upload_venue_document(
    request: Request,
    engine: EngineDep,
    key: str,
    file: Annotated[UploadFile, File()],
    kind: Annotated[str, Form(max_length=40)] = "house_rules",
    title: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return await _store(request, engine, key, None, file, kind, title)


@router.post("/manage/resources/{key}/documents")
async def upload_resource_document(
    request: Request,
    engine: EngineDep,
    key: str,
    file: Annotated[UploadFile, File()],
    kind: Annotated[str, Form(max_length=40)] = "house_rules",
    title: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return await _store(request, engine, None, key, file, kind, title)


@router.post("/manage/documents/{document_id}/delete")
def remove_document(
    request: Request, engine: EngineDep, document_id: int, back: Annotated[str, Form(max_length=200)] = "/manage"
) -> Response:
    check_origin(request)
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    with write_session(engine) as s:
        documents.remove(s, principal, document_id)
    target = back if back.startswith("/manage/") and "//" not in back else "/manage"
    return done(target, "removed")


# ---------------------------------------------------------------- the doors board


@dataclass
class Board:
    """What the board shows, with names instead of keys and times in each site's zone."""

    controllers: list[dict[str, Any]]
    doors: list[dict[str, Any]]
    events: list[dict[str, Any]]
    last_event: int = 0


def _stamp(value: datetime | None, tz: tzinfo, locale: str) -> str:
    return format_datetime(value, "medium", tzinfo=tz, locale=locale) if value else "—"


def _event_rows(
    s: Session, events: list[access_events.EventPublic], locale: str, t: Callable[..., str]
) -> list[dict[str, Any]]:
    doors = {d.key: d for d in s.exec(select(Door).where(col(Door.key).in_({e.door for e in events if e.door}))).all()}
    ctls = {c.key: c for c in s.exec(select(Controller)).all()}
    zones = {x.id: x.timezone for x in s.exec(select(Site)).all()}
    users = {e.user_id for e in events if e.user_id}
    names = {u.id: u.name for u in s.exec(select(User).where(col(User.id).in_(users))).all()} if users else {}
    booked = {int(e.source.split(":", 1)[1]) for e in events if e.source and e.source.startswith("reservation:")}
    resource_of = (
        {
            rid: local_name(resource, locale)
            for rid, resource in s.exec(
                select(Reservation.id, Resource)
                .join(Resource, col(Resource.id) == Reservation.resource_id)
                .where(col(Reservation.id).in_(booked))
            ).all()
        }
        if booked
        else {}
    )
    levels = source_labels(s, {e.source for e in events if e.source})  # level:<holder> -> level:<key>
    rows = []
    for e in events:
        door = doors.get(e.door or "")
        ctl = ctls.get(e.controller)
        site_id = door.site_id if door else ctl.site_id if ctl else None
        tz = zone(zones.get(site_id, "UTC")) if site_id else zone("UTC")
        why = ""
        if e.source and e.source.startswith("reservation:"):
            why = resource_of.get(int(e.source.split(":", 1)[1]), "")
        elif e.source:
            why = t("visit") if e.source.startswith("visit:") else levels.get(e.source, e.source)
        rows.append(
            {
                "id": e.id,
                "kind": e.kind,
                "kind_label": t(access_events_label(e.kind)),
                "at": _stamp(e.at, tz, locale),
                "iso": e.at.isoformat(),
                "door": door.name if door else (ctl.name if ctl else e.controller),
                "door_key": e.door or "",
                "who": names.get(e.user_id, "") if e.user_id else (e.presented or ""),
                "why": why,
            }
        )
    return rows


EVENT_LABELS = {
    "granted": N_("granted"),
    "denied": N_("denied"),
    "forced": N_("forced"),
    "held_open": N_("held open"),
    "tamper": N_("tamper"),
    "unknown": N_("unknown"),
}
STATE_LABELS = {
    "online": N_("online"),
    "offline": N_("offline"),
    "degraded": N_("degraded"),
    "unknown": N_("unknown"),
}


def access_events_label(kind: str) -> str:
    return EVENT_LABELS.get(kind, kind)


def _controller_row(c: Controller, tz: tzinfo, locale: str, t: Callable[..., str]) -> dict[str, Any]:
    return {
        "key": c.key,
        "name": c.name,
        "driver": c.driver,
        "state": c.state,
        "state_label": t(STATE_LABELS.get(c.state, c.state)),
        "last_seen": _stamp(c.last_seen, tz, locale),
        "last_sync": _stamp(c.last_sync, tz, locale),
    }


def visible_controllers(s: Session, principal: Principal, doors: list[Door]) -> list[Controller]:
    ids = {d.controller_id for d in doors}
    rows = s.exec(select(Controller).where(Controller.active).order_by(col(Controller.key))).all()
    return [c for c in rows if principal.admin or c.id in ids]


def board(s: Session, principal: Principal, locale: str, *, kind: str = "", door: str = "", limit: int = 50) -> Board:
    t = translator(locale)
    doors = access_service.visible_doors(s, principal)
    zones = {x.id: zone(x.timezone) for x in s.exec(select(Site)).all()}
    now = utcnow()
    state = access_service.state_for_doors(s, [ident(d) for d in doors], now)
    live = [g for g in state.grants if g.valid_until > now]
    public = {p.key: p for p in access_service.door_public(s, doors)}
    resource_ids = {r for p in public.values() for r in p.resources}
    names = (
        {r.id: local_name(r, locale) for r in s.exec(select(Resource).where(col(Resource.id).in_(resource_ids))).all()}
        if resource_ids
        else {}
    )
    door_rows = [
        {
            "key": d.key,
            "name": d.name,
            "resources": ", ".join(sorted(names[r] for r in public[d.key].resources if r in names)),
            "now": sum(1 for g in live if g.door_id == d.id and g.valid_from <= now),
            "coming": sum(1 for g in live if g.door_id == d.id and g.valid_from > now),
        }
        for d in doors
    ]
    controllers = [
        _controller_row(c, zones.get(c.site_id, zone("UTC")), locale, t)
        for c in visible_controllers(s, principal, doors)
    ]
    visible = {ident(d) for d in doors}
    latest = access_events.list_events(
        s, principal, visible_door_ids=visible, door=door or None, kind=[kind] if kind else None, limit=limit
    )
    newest = access_events.list_events(s, principal, visible_door_ids=visible, limit=1)
    return Board(
        controllers=controllers,
        doors=door_rows,
        events=_event_rows(s, latest, locale, t),
        last_event=newest[0].id if newest else 0,
    )


@router.get("/doors", response_class=HTMLResponse)
def doors_page(
    request: Request,
    engine: EngineDep,
    kind: Annotated[str, Query(max_length=20)] = "",
    door: Annotated[str, Query(max_length=63)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """Staff's live board. Without script it is a plain page with a filter form; with `doors.js`
    it follows `/doors/stream` and updates itself in place, leaving the focus where it is."""
    principal = guard(request, engine, *STAFF)
    if not isinstance(principal, Principal):
        return principal
    locale = page_locale(request, principal)
    with open_session(engine) as s:
        try:
            b = board(s, principal, locale, kind=kind if kind in EVENT_KINDS else "", door=door)
        except AppError:
            b = board(s, principal, locale)
        door_choices = [(d["key"], d["name"]) for d in b.doors]
    needle = q.strip().lower()
    events = [e for e in b.events if not needle or needle in f"{e['door']} {e['who']} {e['why']}".lower()]
    return page(
        request,
        "doors.html",
        principal,
        board=b,
        events=events,
        kinds=[(k, EVENT_LABELS[k]) for k in EVENT_KINDS],
        door_choices=door_choices,
        kind=kind,
        door=door,
        q=q,
    )


@dataclass
class StreamState:
    """Where one board's stream stands. Door events are told apart by id, not by the highest id
    sent: on PostgreSQL a smaller id may commit after a bigger one was read, so each tick reads the
    newest events again and sends those not sent yet (the board ignores an id it already shows)."""

    floor: int
    controllers: dict[str, tuple[str, str]]
    sent: set[int] = field(default_factory=set)

    def remember(self, event_id: int) -> None:
        self.sent.add(event_id)
        if len(self.sent) > 2000:
            self.sent = set(sorted(self.sent)[-1000:])
            self.floor = max(self.floor, min(self.sent) - 1)


def board_updates(engine: Any, principal: Principal, locale: str, state: StreamState) -> list[dict[str, str]]:
    """What changed since `state`, as server-sent events (and `state` moved on): new door events of
    the viewer's doors, oldest first, and controllers whose state or last contact changed."""
    t = translator(locale)
    out: list[dict[str, str]] = []
    with open_session(engine) as s:
        doors = access_service.visible_doors(s, principal)
        visible = {ident(d) for d in doors}
        fresh = sorted(
            (
                e
                for e in access_events.list_events(s, principal, visible_door_ids=visible, limit=100)
                if e.id > state.floor and e.id not in state.sent
            ),
            key=lambda e: e.id,
        )
        for row in _event_rows(s, fresh, locale, t):
            out.append({"event": "door", "id": str(row["id"]), "data": json.dumps(row)})
            state.remember(row["id"])
        zones = {x.id: zone(x.timezone) for x in s.exec(select(Site)).all()}
        for c in visible_controllers(s, principal, doors):
            row = _controller_row(c, zones.get(c.site_id, zone("UTC")), locale, t)
            seen = (row["state"], row["last_seen"])
            if state.controllers.get(c.key) != seen:
                state.controllers[c.key] = seen
                out.append({"event": "controller", "data": json.dumps(row)})
    return out


@router.get("/doors/stream")
async def doors_stream(request: Request, engine: EngineDep, after: Annotated[int, Query(ge=0)] = 0) -> Response:
    """Server-sent events for the board: `door` (a new door event) and `controller` (a state
    change). The stream re-checks its viewer's session now and then and ends when it is gone."""
    principal = await run_in_threadpool(current, request, engine)
    if principal is None or not principal.has_any(*STAFF):
        return Response(status_code=401 if principal is None else 403)
    locale = page_locale(request, principal) if principal else "en"
    with open_session(engine) as s:
        doors = access_service.visible_doors(s, principal)
        zones = {x.id: zone(x.timezone) for x in s.exec(select(Site)).all()}
        t = translator(locale)
        known = {
            c.key: (row["state"], row["last_seen"])
            for c in visible_controllers(s, principal, doors)
            for row in [_controller_row(c, zones.get(c.site_id, zone("UTC")), locale, t)]
        }
    # `after`: the newest event the page showed. A reconnecting EventSource asks again from there;
    # what it shows already is skipped by the page.
    state = StreamState(floor=after, controllers=known)

    async def stream() -> AsyncIterator[dict[str, str]]:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not await request.is_disconnected():
            for item in await run_in_threadpool(board_updates, engine, principal, locale, state):
                yield item
            if loop.time() - checked > RECHECK_SECONDS:
                checked = loop.time()
                if await run_in_threadpool(current, request, engine) is None:
                    return
            await asyncio.sleep(POLL_SECONDS)

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})
