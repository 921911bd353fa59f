"""Portal wiring: Jinja2 templates, the session cookie, sign-in and the home page.

The cookie carries the same opaque session token as the API's bearer header; it is
HttpOnly and SameSite=Lax, and state-changing forms also check the Origin header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select

from access import events as access_events
from access import service as access_service
from access.models import Controller
from bms.models import Resource
from core import auth
from core.auth import Principal
from core.db import open_session, utcnow
from core.deps import ClientAddr, EngineDep, SettingsDep
from core.errors import AppError, Forbidden
from core.i18n import pick_locale, translator
from core.models import Role, Site, User, Venue

COOKIE = "bookgate_session"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, principal: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    locale = pick_locale(principal.locale if principal else None, request.headers.get("accept-language"))
    return templates.TemplateResponse(
        request, name, {"t": translator(locale), "locale": locale, "me": principal, **ctx}, status_code=status
    )


def check_origin(request: Request) -> None:
    """Refuse cross-site form posts: the Origin (or Referer) must be this host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("bad_origin", "cross-site form submission refused")


def current(request: Request, engine: Any) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    with open_session(engine) as s:
        try:
            return auth.resolve_token(s, token)
        except AppError:
            return None


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", None)


@router.post("/login")
def login_submit(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    addr: ClientAddr,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    check_origin(request)
    try:
        token = auth.login(engine, settings, email, password, addr)
    except AppError as exc:
        key = "login.throttled" if exc.status == 429 else "login.failed"
        return render(request, "login.html", None, status=exc.status, error=key, email=email)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        token.access_token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=settings.session_ttl_minutes * 60,
    )
    return response


@router.post("/logout")
def logout_submit(request: Request, engine: EngineDep) -> Response:
    check_origin(request)
    principal = current(request, engine)
    if principal is not None:
        with open_session(engine, write=True) as s:
            auth.logout(s, principal)
            s.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, engine: EngineDep) -> Response:
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    with open_session(engine) as s:
        rows = s.exec(
            select(Site, Venue, Resource)
            .join(Venue, Venue.site_id == Site.id)
            .join(Resource, Resource.venue_id == Venue.id)
            .where(Resource.active)
            .order_by(Site.key, Venue.key, Resource.key)
        ).all()
    visible_sites = principal.resident_sites | principal.reception_sites
    venues: dict[tuple[str, str], list[Resource]] = {}
    for site, venue, resource in rows:
        if principal.admin or site.id in visible_sites or venue.id in principal.managed_venues:
            venues.setdefault((site.name, venue.name), []).append(resource)
    return render(
        request,
        "home.html",
        principal,
        venues=venues,
        roles=sorted(principal.roles),
        staff=principal.has_any(Role.venue_manager, Role.reception),
    )


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
        state = access_service.state_for_doors(s, [d.id for d in doors], now)  # type: ignore[misc]
        ctl_ids = {d.controller_id for d in doors}
        controllers = [
            c
            for c in s.exec(select(Controller).where(Controller.active).order_by(Controller.key)).all()
            if principal.admin or c.id in ctl_ids
        ]
        latest = access_events.list_events(
            s,
            principal,
            visible_door_ids={d.id for d in doors},
            limit=30,  # type: ignore[misc]
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
