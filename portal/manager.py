"""Venue managers' and reception's pages: the live doors board."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select

from access import events as access_events
from access import service as access_service
from access.models import Controller
from core.db import ident, open_session, utcnow
from core.deps import EngineDep
from core.models import Role, User
from portal.layout import current, render

router = APIRouter(include_in_schema=False)


@router.get("/doors", response_class=HTMLResponse)
def doors_page(request: Request, engine: EngineDep) -> Response:
    """Staff's live board: controllers' state, each door's current and coming grants, the latest
    door events with what explains them. Refreshes itself every few seconds."""
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    if not principal.has_any(Role.venue_manager, Role.reception):
        return render(request, "forbidden.html", principal, status=403)
    with open_session(engine) as s:
        doors = access_service.visible_doors(s, principal)
        now = utcnow()
        # One read of the desired state for every door on the board, not one per door.
        state = access_service.state_for_doors(s, [ident(d) for d in doors], now)
        ctl_ids = {d.controller_id for d in doors}
        controllers = [
            c
            for c in s.exec(select(Controller).where(Controller.active).order_by(col(Controller.key))).all()
            if principal.admin or c.id in ctl_ids
        ]
        latest = access_events.list_events(
            s,
            principal,
            visible_door_ids={ident(d) for d in doors},
            limit=30,
        )
        names = {u.id: u.name for u in s.exec(select(User).where(col(User.id).in_({e.user_id for e in latest}))).all()}
    live = [g for g in state.grants if g.valid_until > now]
    return render(
        request,
        "doors.html",
        principal,
        controllers=controllers,
        doors=[
            (
                d,
                sum(1 for g in live if g.door_id == d.id and g.valid_from <= now),
                sum(1 for g in live if g.door_id == d.id and g.valid_from > now),
            )
            for d in doors
        ],
        events=latest,
        names=names,
    )
