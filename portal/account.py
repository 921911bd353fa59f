"""Signing in and out: the pages every audience shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from core import auth
from core.db import write_session
from core.deps import ClientAddr, EngineDep, SettingsDep
from core.errors import AppError
from portal.layout import COOKIE, STATIC_DIR, check_origin, current, render

router = APIRouter(include_in_schema=False)


@router.get("/static/portal.css")
def stylesheet() -> FileResponse:
    """The pages' one stylesheet: a file of their own, since their CSP forbids inline styles."""
    return FileResponse(STATIC_DIR / "portal.css", media_type="text/css", headers={"Cache-Control": "max-age=3600"})


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
        with write_session(engine) as s:
            auth.logout(s, principal)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
