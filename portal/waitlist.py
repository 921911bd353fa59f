"""Waitlist pages: residents see their entries, join a full slot's waitlist and accept or decline
an offer; a venue's managers see a resource's queue in order, with each candidate's history, offer
a place to a chosen candidate (manual venues) and set the venue's auto/manual mode. Every action
goes through `bms.waitlist` (rules, quotas, audit, the booking path)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import col, func, select

from bms import waitlist
from bms.context import load_resource, visible_resource
from bms.models import Resource
from core.auth import Principal
from core.db import ident, open_session, write_session
from core.deps import EngineDep
from core.errors import AppError
from core.i18n import N_
from core.models import Role, User, Venue
from portal.layout import NAV, NavItem, check_origin, render, require_page

router = APIRouter(include_in_schema=False)
NAV.append(NavItem("/waitlist", N_("My waitlist"), (Role.resident.value,)))
NAV.append(NavItem("/manage/waitlist", N_("Waitlists"), (Role.venue_manager.value,)))

# What a refusal says on the page, by reason code.
REFUSALS = {
    "slot_free": N_("This slot has room: book it instead."),
    "already_waiting": N_("You are already on this waitlist."),
    "offer_closed": N_("This offer is closed."),
    "offer_lapsed": N_("This offer has lapsed."),
    "place_gone": N_("The place was taken meanwhile."),
    "entry_closed": N_("This entry is closed."),
    "no_room": N_("This window has no room now."),
    "held_for_waitlist": N_("This place is held for someone on the waitlist."),
    "invalid_time": N_("Give a start and an end with a UTC offset."),
    "invalid_mode": N_("Choose automatic or manual offers."),
}
DONE = {
    "joined": N_("You are on the waitlist."),
    "accept": N_("Booked: the place is yours."),
    "decline": N_("Offer declined."),
    "leave": N_("You left the waitlist."),
    "offer": N_("Offer sent."),
    "policy": N_("Saved."),
}
STATUS = {
    waitlist.WAITING: N_("waiting"),
    waitlist.OFFERED: N_("offered"),
    waitlist.BOOKED: N_("booked"),
    waitlist.DECLINED: N_("declined"),
    waitlist.LAPSED: N_("lapsed"),
    waitlist.LEFT: N_("left"),
}


def _refusal(exc: AppError) -> str:
    return REFUSALS.get(exc.code, N_("Refused: {code}"))


def _flash(request: Request) -> tuple[str | None, str | None]:
    done = DONE.get(request.query_params.get("done", ""))
    code = request.query_params.get("refused", "")
    return done, (REFUSALS.get(code, N_("Refused: {code}")) if code else None)


@router.get("/waitlist", response_class=HTMLResponse)
def my_waitlist(request: Request, engine: EngineDep) -> Response:
    me = require_page(request, engine, Role.resident)
    if not isinstance(me, Principal):
        return me
    with open_session(engine) as s:
        entries = waitlist.mine(s, me)
        zones = {k: load_resource(s, k).rules.tz for k in {e.resource for e in entries}}
    notice, refused = _flash(request)
    return render(
        request,
        "waitlist.html",
        me,
        entries=entries,
        zones=zones,
        statuses=STATUS,
        notice=notice,
        refused=refused,
        code=request.query_params.get("refused", ""),
    )


@router.get("/waitlist/join", response_class=HTMLResponse)
def join_page(request: Request, engine: EngineDep) -> Response:
    """Reached from a full slot of the calendar: what joining means, and the button that does it."""
    me = require_page(request, engine, Role.resident)
    if not isinstance(me, Principal):
        return me
    q = request.query_params
    try:
        start, end = datetime.fromisoformat(q.get("start", "")), datetime.fromisoformat(q.get("end", ""))
        with open_session(engine) as s:
            ctx = visible_resource(s, me, q.get("resource", "")[:63])
    except ValueError:
        return RedirectResponse("/waitlist?refused=invalid_time", status_code=303)
    except AppError:
        return render(request, "forbidden.html", me, status=404)
    return render(request, "waitlist_join.html", me, resource=ctx.resource, tz=ctx.rules.tz, start=start, end=end)


@router.post("/waitlist/join")
def join(
    request: Request,
    engine: EngineDep,
    resource: Annotated[str, Form(max_length=63)],
    start: Annotated[str, Form(max_length=40)],
    end: Annotated[str, Form(max_length=40)],
) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.resident)
    if not isinstance(me, Principal):
        return me
    try:
        data = waitlist.WaitlistJoin(
            resource=resource, start=datetime.fromisoformat(start), end=datetime.fromisoformat(end)
        )
        with write_session(engine) as s:
            waitlist.join(s, me, data)
    except (ValueError, ValidationError):
        return RedirectResponse("/waitlist?refused=invalid_time", status_code=303)
    except AppError as exc:
        return RedirectResponse(f"/waitlist?refused={exc.code}", status_code=303)
    return RedirectResponse("/waitlist?done=joined", status_code=303)


@router.post("/waitlist/{entry_id}/{action}")
def act(entry_id: int, action: str, request: Request, engine: EngineDep) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.resident)
    if not isinstance(me, Principal):
        return me
    do = {"accept": waitlist.accept, "decline": waitlist.decline, "leave": waitlist.leave}.get(action)
    if do is None:
        return RedirectResponse("/waitlist", status_code=303)
    try:
        with write_session(engine) as s:
            if action == "accept":
                waitlist.accept(s, me, entry_id, policies=request.app.state.booking_policies)
            else:
                do(s, me, entry_id)
    except AppError as exc:
        return RedirectResponse(f"/waitlist?refused={exc.code}", status_code=303)
    return RedirectResponse(f"/waitlist?done={action}", status_code=303)


# ---------------------------------------------------------------- managers


@router.get("/manage/waitlist", response_class=HTMLResponse)
def queues_page(request: Request, engine: EngineDep) -> Response:
    """The resources of the venues one manages, with how many people wait for each."""
    me = require_page(request, engine, Role.venue_manager, Role.admin)
    if not isinstance(me, Principal):
        return me
    with open_session(engine) as s:
        stmt = select(Resource, Venue).join(Venue, col(Venue.id) == Resource.venue_id).where(col(Resource.active))
        if not me.admin:
            stmt = stmt.where(col(Venue.id).in_(me.managed_venues))
        rows = s.exec(stmt.order_by(col(Venue.name), col(Resource.name))).all()
        counts = dict(
            s.exec(
                select(waitlist.WaitlistEntry.resource_id, func.count())
                .where(col(waitlist.WaitlistEntry.status).in_(waitlist.OPEN))
                .group_by(col(waitlist.WaitlistEntry.resource_id))
            ).all()
        )
    return render(request, "waitlist_queues.html", me, rows=rows, counts=counts)


@router.get("/manage/waitlist/{resource}", response_class=HTMLResponse)
def queue_page(resource: str, request: Request, engine: EngineDep) -> Response:
    me = require_page(request, engine, Role.venue_manager, Role.admin)
    if not isinstance(me, Principal):
        return me
    with open_session(engine) as s:
        try:
            entries = waitlist.queue(s, me, resource)
            ctx = load_resource(s, resource)
        except AppError:
            return render(request, "forbidden.html", me, status=403)
        policy = waitlist.policy(s, ident(ctx.venue))
        venue = ctx.venue
        ids = {e.user_id for e in entries}
        names = {u.id: u.name for u in s.exec(select(User).where(col(User.id).in_(ids))).all()} if ids else {}
    notice, refused = _flash(request)
    return render(
        request,
        "waitlist_queue.html",
        me,
        resource=ctx.resource,
        venue=venue,
        policy=policy,
        entries=entries,
        tz=ctx.rules.tz,
        names=names,
        statuses=STATUS,
        notice=notice,
        refused=refused,
        code=request.query_params.get("refused", ""),
    )


@router.post("/manage/waitlist/{resource}/offer/{entry_id}")
def offer(resource: str, entry_id: int, request: Request, engine: EngineDep) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.venue_manager, Role.admin)
    if not isinstance(me, Principal):
        return me
    try:
        with write_session(engine) as s:
            waitlist.offer_by_manager(s, me, entry_id)
    except AppError as exc:
        return RedirectResponse(f"/manage/waitlist/{resource}?refused={exc.code}", status_code=303)
    return RedirectResponse(f"/manage/waitlist/{resource}?done=offer", status_code=303)


@router.post("/manage/waitlist/{resource}/policy")
def set_policy(
    resource: str,
    request: Request,
    engine: EngineDep,
    mode: Annotated[str, Form(max_length=10)],
    hold_minutes: Annotated[int, Form(ge=1, le=7 * 24 * 60)] = 30,
) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.venue_manager, Role.admin)
    if not isinstance(me, Principal):
        return me
    try:
        data = waitlist.WaitlistPolicyIn.model_validate({"mode": mode, "hold_minutes": hold_minutes})
        with write_session(engine) as s:
            ctx = load_resource(s, resource)
            venue = s.exec(select(Venue).where(col(Venue.id) == ctx.venue.id)).one()
            waitlist.set_policy(s, me, ident(venue), data)
    except ValidationError:
        return RedirectResponse(f"/manage/waitlist/{resource}?refused=invalid_mode", status_code=303)
    except AppError as exc:
        return RedirectResponse(f"/manage/waitlist/{resource}?refused={exc.code}", status_code=303)
    return RedirectResponse(f"/manage/waitlist/{resource}?done=policy", status_code=303)
