"""Reception's pages (the desk, the live on-site board, badges, the evacuation roll call) and the
host's page of their visits with their QR codes.

The desk's scan field is an ordinary form: a USB or Bluetooth scanner types the code and Enter
into the focused field, exactly as a person would. Every post answers with a redirect to the desk
(post/redirect/get), carrying the outcome's code, so a reload never scans twice. The board loads
one small script of our own (`/static/reception.js`) that listens to the visits' event stream and
edits the table in place, never touching the focus.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from core.auth import Principal
from core.db import open_session, utcnow, write_session
from core.deps import EngineDep
from core.errors import AppError
from core.i18n import N_
from core.models import Role, RoleGrant, Site, User
from portal.layout import NAV, NavItem, check_origin, current, render
from vms import schemas
from vms import service as vms
from vms.models import Visit

router = APIRouter(include_in_schema=False)
NAV.append(NavItem("/reception", N_("Reception desk"), (Role.reception.value,)))
NAV.append(NavItem("/visits", N_("My visitors"), (Role.resident.value, Role.reception.value)))

# What the desk says after each action: short, and what to do next.
OUTCOMES = {
    "checked_in": N_("Checked in. The visitor's doors are open to them until check-out."),
    "held": N_("Held: this visitor matches the deny list. Decide below."),
    "checked_out": N_("Checked out. Door access was taken back."),
    "denied": N_("Entry denied."),
    "walked_in": N_("Walk-in registered and checked in."),
    "invited": N_("Invitation sent."),
    "cancelled": N_("Visit cancelled: its code no longer works."),
    "token_malformed": N_("That is not a visit code. Scan again, or look the visitor up below."),
    "token_unknown": N_("No visit has this code. Look the visitor up by name below."),
    "token_wrong_site": N_("This invitation is for another site."),
    "token_revoked": N_("This invitation was cancelled. Call the host."),
    "already_on_site": N_("This visitor is already checked in."),
    "token_used": N_("This code was already used for a visit that is over."),
    "held_for_decision": N_("This visit waits for a decision."),
    "token_not_yet_valid": N_("Too early: this invitation is not valid yet."),
    "token_expired": N_("This invitation's window is over. Ask the host, or register a walk-in."),
    "not_expected": N_("This visit is not expected any more."),
    "window_over": N_("This visit's window is over: register a walk-in instead."),
    "not_on_site": N_("This visitor is not checked in."),
    "door_not_allowed": N_("The host may not open some of those doors."),
    "host_not_found": N_("Pick a host of this site."),
    "invalid": N_("Some fields are not valid."),
}


def _desk_sites(session: Session, principal: Principal) -> list[Site]:
    rows = session.exec(select(Site).order_by(col(Site.key))).all()
    return [s for s in rows if principal.at_reception(s.id or 0)]


def _pick(session: Session, principal: Principal, key: str | None) -> Site | None:
    sites = _desk_sites(session, principal)
    if key:
        return next((s for s in sites if s.key == key), None)
    return sites[0] if sites else None


def _guard(request: Request, engine: Any) -> Principal | Response:
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    if not principal.has_any(Role.reception):
        return render(request, "forbidden.html", principal, status=403)
    return principal


def _back(site: str, outcome: str, visit_id: int | None = None, q: str | None = None) -> RedirectResponse:
    params: dict[str, Any] = {"site": site, "outcome": outcome}
    if visit_id:
        params["visit"] = visit_id
    if q:
        params["q"] = q
    return RedirectResponse("/reception?" + urlencode(params), status_code=303)


def _local(dt: datetime | None, zone: ZoneInfo, fmt: str = "%H:%M") -> str:
    return dt.astimezone(zone).strftime(fmt) if dt else ""


def _hosts(session: Session, site_id: int) -> list[User]:
    ids = session.exec(
        select(RoleGrant.user_id).where(
            col(RoleGrant.site_id) == site_id, col(RoleGrant.role).in_([Role.resident.value, Role.reception.value])
        )
    ).all()
    return list(
        session.exec(select(User).where(col(User.id).in_(set(ids)), User.is_active).order_by(col(User.name))).all()
    )[:1000]


STATUS = {
    "invited": N_("Expected"),
    "held": N_("Held for a decision"),
    "checked_in": N_("On site"),
    "checked_out": N_("Left"),
    "no_show": N_("No-show"),
    "denied": N_("Denied"),
    "cancelled": N_("Cancelled"),
}


@router.get("/reception", response_class=HTMLResponse)
def desk(
    request: Request,
    engine: EngineDep,
    site: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    outcome: str | None = None,
    visit: int | None = None,
) -> Response:
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    q = (q or "")[:100]
    with open_session(engine) as s:
        row = _pick(s, principal, site)
        if row is None:
            return render(request, "forbidden.html", principal, status=403)
        zone = ZoneInfo(row.timezone)
        expected = vms.public(s, vms.today(s, principal, row, q or None))
        focus = vms.public(s, [v]) if visit and (v := s.get(Visit, visit)) and v.site_id == row.id else []
        hosts = _hosts(s, row.id or 0)
        sites = _desk_sites(s, principal)
    return render(
        request,
        "reception_desk.html",
        principal,
        labels=STATUS,
        site=row,
        sites=sites,
        zone=zone,
        local=_local,
        expected=expected,
        q=q,
        outcome=outcome if outcome in OUTCOMES else None,
        outcome_text=OUTCOMES.get(outcome or "", ""),
        good=outcome in ("checked_in", "checked_out", "walked_in"),
        focus=focus[0] if focus else None,
        hosts=hosts,
    )


@router.post("/reception/scan")
def scan(
    request: Request,
    engine: EngineDep,
    site: Annotated[str, Form(max_length=63)],
    token: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    check_origin(request)
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    token = token.strip()
    try:
        with write_session(engine) as s:
            visit = vms.check_in_by_token(s, principal, token, site)
            outcome, visit_id = visit.status, visit.id
    except AppError as exc:
        return _back(site, exc.code)
    return _back(site, outcome, visit_id)


def _act(request: Request, engine: Any, site: str, visit_id: int, action: str) -> Response:
    check_origin(request)
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    try:
        with write_session(engine) as s:
            if action == "check-in":
                visit = vms.check_in(s, principal, visit_id)
            elif action == "check-out":
                visit = vms.desk_check_out(s, principal, visit_id)
            elif action == "allow":
                visit = vms.decide_hold(s, principal, visit_id, True, "at the desk")
            elif action == "deny":
                visit = vms.decide_hold(s, principal, visit_id, False, "at the desk")
            else:
                visit = vms.cancel(s, principal, visit_id)
            outcome = visit.status
    except AppError as exc:
        return _back(site, exc.code, visit_id)
    return _back(site, outcome, visit_id)


@router.post("/reception/visits/{visit_id}/{action}")
def visit_action(
    request: Request, engine: EngineDep, visit_id: int, action: str, site: Annotated[str, Form(max_length=63)]
) -> Response:
    if action not in ("check-in", "check-out", "allow", "deny", "cancel") or not 0 < visit_id < 2**31:
        return Response(status_code=404)
    return _act(request, engine, site, visit_id, action)


@router.post("/reception/walk-in")
def walk_in(
    request: Request,
    engine: EngineDep,
    site: Annotated[str, Form(max_length=63)],
    name: Annotated[str, Form(max_length=200)],
    host_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    company: Annotated[str, Form(max_length=200)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    check_origin(request)
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    try:
        with write_session(engine) as s:
            row = vms.site_by_key(s, site)
            end = None
            if until:
                hh, mm = (int(p) for p in until.split(":"))
                zone = ZoneInfo(row.timezone)
                local_now = utcnow().astimezone(zone)
                end = datetime.combine(local_now.date(), time(hh, mm), tzinfo=zone)
                if end <= local_now:
                    end += timedelta(days=1)
            data = schemas.WalkInIn(
                site=site,
                host_id=host_id,
                visitor=schemas.VisitorIn(name=name, company=company or None, phone=phone or None),
                end=end,
            )
            visit, _token = vms.walk_in(s, principal, data)
            outcome = "walked_in" if visit.status == "checked_in" else visit.status
            visit_id = visit.id
    except AppError as exc:
        return _back(site, exc.code)
    except (ValidationError, ValueError):
        return _back(site, "invalid")
    return _back(site, outcome, visit_id)


@router.get("/reception/board", response_class=HTMLResponse)
def board(request: Request, engine: EngineDep, site: str | None = None) -> Response:
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    with open_session(engine) as s:
        row = _pick(s, principal, site)
        if row is None:
            return render(request, "forbidden.html", principal, status=403)
        visits = vms.public(s, vms.on_site(s, principal, row))
    return render(
        request, "reception_board.html", principal, site=row, visits=visits, zone=ZoneInfo(row.timezone), local=_local
    )


@router.get("/reception/visits/{visit_id}/badge", response_class=HTMLResponse)
def badge(request: Request, engine: EngineDep, visit_id: int) -> Response:
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    with open_session(engine) as s:
        try:
            visit = vms.get_visit(s, principal, visit_id) if 0 < visit_id < 2**31 else None
        except AppError:
            visit = None
        if visit is None or not principal.at_reception(visit.site_id):
            return render(request, "forbidden.html", principal, status=404)
        row = s.get(Site, visit.site_id)
        live = vms.visit_token(visit) is not None
        shown = vms.public(s, [visit])[0]
    assert row is not None
    return render(
        request,
        "reception_badge.html",
        principal,
        v=shown,
        site=row,
        zone=ZoneInfo(row.timezone),
        local=_local,
        live=live,
    )


@router.get("/reception/roll-call", response_class=HTMLResponse)
def roll_call(request: Request, engine: EngineDep, site: str | None = None) -> Response:
    """Who is inside, for an evacuation: one read, nothing else, so it answers when the rest is slow."""
    principal = _guard(request, engine)
    if isinstance(principal, Response):
        return principal
    with open_session(engine) as s:
        row = _pick(s, principal, site)
        if row is None:
            return render(request, "forbidden.html", principal, status=403)
        call = vms.roll_call(s, principal, row)
    return render(request, "reception_rollcall.html", principal, site=row, call=call, zone=ZoneInfo(row.timezone))


# ---------------------------------------------------------------- hosts


@router.get("/visits", response_class=HTMLResponse)
def my_visits(request: Request, engine: EngineDep, outcome: str | None = None) -> Response:
    """A host's visits to come, each with its QR code to forward, and a form to invite someone."""
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    with open_session(engine) as s:
        rows = s.exec(
            select(Visit)
            .where(col(Visit.host_id) == principal.user_id, col(Visit.end) > utcnow() - timedelta(days=1))
            .order_by(col(Visit.start))
            .limit(200)
        ).all()
        visits = vms.public(s, list(rows))
        sites = [
            x
            for x in s.exec(select(Site).order_by(col(Site.key))).all()
            if x.id in principal.resident_sites or principal.at_reception(x.id or 0)
        ]
    zone = ZoneInfo(sites[0].timezone) if sites else ZoneInfo("UTC")
    return render(
        request,
        "reception_visits.html",
        principal,
        labels=STATUS,
        visits=visits,
        sites=sites,
        zone=zone,
        local=_local,
        outcome_text=OUTCOMES.get(outcome or "", outcome or ""),
    )


@router.post("/visits")
def invite(
    request: Request,
    engine: EngineDep,
    site: Annotated[str, Form(max_length=63)],
    name: Annotated[str, Form(max_length=200)],
    day: Annotated[str, Form(max_length=10)],
    start: Annotated[str, Form(max_length=5)],
    end: Annotated[str, Form(max_length=5)],
    email: Annotated[str, Form(max_length=254)] = "",
    company: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_origin(request)
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    try:
        with write_session(engine) as s:
            zone = ZoneInfo(vms.site_by_key(s, site).timezone)
            d = date.fromisoformat(day)
            a = datetime.combine(d, time.fromisoformat(start), tzinfo=zone)
            b = datetime.combine(d, time.fromisoformat(end), tzinfo=zone)
            data = schemas.InviteIn(
                site=site,
                visitors=[schemas.VisitorIn(name=name, email=email or None, company=company or None)],
                start=a,
                end=b,
            )
            vms.invite(s, principal, data)
    except AppError as exc:
        return RedirectResponse("/visits?" + urlencode({"outcome": exc.code}), status_code=303)
    except (ValidationError, ValueError):
        return RedirectResponse("/visits?outcome=invalid", status_code=303)
    return RedirectResponse("/visits?outcome=invited", status_code=303)


@router.post("/visits/{visit_id}/cancel")
def host_cancel(request: Request, engine: EngineDep, visit_id: int) -> Response:
    check_origin(request)
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    try:
        with write_session(engine) as s:
            vms.cancel(s, principal, visit_id if 0 < visit_id < 2**31 else 0)
    except AppError as exc:
        return RedirectResponse("/visits?" + urlencode({"outcome": exc.code}), status_code=303)
    return RedirectResponse("/visits?outcome=cancelled", status_code=303)
