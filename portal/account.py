"""The pages every audience shares: signing in and out, the language, my profile; the portal's
own static files and the API documentation served from this machine (no CDN)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from access.models import Credential
from access.service import PinChange, change_own_pin, credential_public
from config.settings import SUPPORTED_LOCALES
from core import auth
from core.auth import Principal, UserUpdate
from core.db import open_session, write_session
from core.deps import ClientAddr, EngineDep, SessionDep, SettingsDep
from core.errors import AppError, NotFound
from core.i18n import N_
from core.security import hashing_for
from portal.layout import (
    COOKIE,
    LANG_COOKIE,
    PAGE_HEADERS,
    STATIC_DIR,
    check_origin,
    current,
    page_locale,
    render,
    require_page,
    templates,
)

router = APIRouter(include_in_schema=False)

ONE_YEAR = 365 * 24 * 3600
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(css|js|svg|png)$")
STATIC_TYPES = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml", "png": "image/png"}


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """The portal's own files (its CSP forbids inline styles and scripts): portal.css, page
    stylesheets and small scripts beside it."""
    path = STATIC_DIR / name
    if not STATIC_NAME.match(name) or not path.is_file():
        raise NotFound("not_found", "no such file")
    return FileResponse(
        path, media_type=STATIC_TYPES[name.rsplit(".", 1)[1]], headers={"Cache-Control": "max-age=3600"}
    )


# ---------------------------------------------------------------- signing in and out


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", None)


def _session_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https", max_age=max_age
    )


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
        error = (
            N_("Too many failed attempts. Try again later.") if exc.status == 429 else N_("Wrong email or password.")
        )
        return render(request, "login.html", None, status=exc.status, error=error, email=email)
    response = RedirectResponse("/", status_code=303)
    _session_cookie(response, request, token.access_token, settings.session_ttl_minutes * 60)
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


# ---------------------------------------------------------------- language


def _local_path(value: str) -> str:
    """Only a path of this site (never '//elsewhere' or a scheme): no open redirect."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _remember_locale(response: Response, request: Request, locale: str) -> None:
    response.set_cookie(
        LANG_COOKIE, locale, max_age=ONE_YEAR, httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


AUTOMATIC = "auto"  # the profile's "the browser's language": the account has no choice


@router.post("/lang")
def switch_language(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    lang: Annotated[str, Form(max_length=5)],
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "/",
) -> Response:
    """The switcher on every page and the profile's choice: on the account when signed in (pages
    and messages follow it; `auto` clears it), else in a cookie for this browser."""
    check_origin(request)
    principal = current(request, engine)
    automatic = lang == AUTOMATIC and principal is not None
    if lang not in SUPPORTED_LOCALES and not automatic:
        raise NotFound("unknown_locale", "no such language")
    response = RedirectResponse(_local_path(next_), status_code=303)
    if principal is None:
        _remember_locale(response, request, lang)
        return response
    wanted = None if automatic else lang
    if principal.locale != wanted:
        with write_session(engine) as s:
            auth.update_user(s, principal.actor, principal.user_id, UserUpdate(locale=wanted), hashing_for(settings))
    response.delete_cookie(LANG_COOKIE)  # the account's choice rules; a stale one would outlive a sign-out
    return response


# ---------------------------------------------------------------- my profile


def _profile(request: Request, session: Session, principal: Principal, status: int = 200, **ctx: Any) -> HTMLResponse:
    creds = session.exec(
        select(Credential).where(col(Credential.user_id) == principal.user_id).order_by(col(Credential.id))
    ).all()
    return render(
        request,
        "profile.html",
        principal,
        status=status,
        credentials=[credential_public(c) for c in creds],
        kind_labels=CREDENTIAL_KINDS,
        errors=ctx.pop("errors", {}),
        **ctx,
    )


CREDENTIAL_KINDS = {
    "badge": N_("Badge"),
    "pin": N_("PIN"),
    "ble": N_("Phone key (BLE)"),
    "qr": N_("QR code"),
    "key": N_("Key cabinet"),
}
# The password policy's refusals (`core.security.check_password`), in words.
PASSWORD_REFUSALS = {
    "password_too_short": N_("Use at least 10 characters."),
    "password_too_long": N_("This password is too long."),
    "password_repetitive": N_("A password of repeated characters is too easy to guess."),
    "password_sequence": N_("A password made of a sequence is too easy to guess."),
    "password_common": N_("This password is among the most common ones; choose another."),
}
NOTICES = {
    "pin": N_("Your PIN is changed."),
    "password": N_("Your password is changed. Your other sessions are signed out."),
    "language": N_("Your language is saved."),
}


@router.get("/profile", response_class=HTMLResponse)
def profile(request: Request, engine: EngineDep, session: SessionDep) -> Response:
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _profile(request, session, principal, notice=NOTICES.get(request.query_params.get("done", "")))


@router.post("/profile/pin/{credential_id:int}")
def change_pin(
    request: Request,
    engine: EngineDep,
    credential_id: int,
    pin: Annotated[str, Form(max_length=64)],
) -> Response:
    """The owner of a PIN chooses its digits (reception issues and revokes it)."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal
    field = f"pin-{credential_id}"
    try:
        data = PinChange(pin=pin)
    except ValidationError:
        with open_session(engine) as s:
            return _profile(request, s, principal, status=422, errors={field: N_("A PIN is 4 to 8 digits.")})
    try:
        with write_session(engine) as s:
            change_own_pin(s, principal, credential_id, data)
    except AppError as exc:
        if exc.status == 404:
            raise
        taken = exc.status == 409 and "taken" in exc.code
        message = N_("Choose other digits.") if taken else N_("This PIN is revoked.")
        with open_session(engine) as s:
            return _profile(request, s, principal, status=exc.status, errors={field: message})
    return RedirectResponse("/profile?done=pin", status_code=303)


@router.post("/profile/password")
def change_password(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    addr: ClientAddr,
    current_password: Annotated[str, Form(max_length=1024)],
    new_password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Checked like a sign-in (throttled), then changed: every session of the account is revoked,
    and this browser gets a fresh one."""
    check_origin(request)
    principal = require_page(request, engine)
    if not isinstance(principal, Principal):
        return principal

    def refuse(field: str, message: str, status: int) -> Response:
        with open_session(engine) as s:
            return _profile(request, s, principal, status=status, errors={field: message})

    try:
        data = UserUpdate(password=new_password)
    except ValidationError as exc:
        code = str(exc.errors()[0].get("type", ""))  # the policy's reason code
        return refuse("new_password", PASSWORD_REFUSALS.get(code, N_("Choose another password.")), 422)
    try:
        auth.login(engine, settings, principal.email, current_password, addr)
    except AppError as exc:
        wrong = (
            N_("Too many failed attempts. Try again later.") if exc.status == 429 else N_("This is not your password.")
        )
        return refuse("current_password", wrong, exc.status)
    with write_session(engine) as s:
        auth.update_user(s, principal.actor, principal.user_id, data, hashing_for(settings))
    token = auth.login(engine, settings, principal.email, new_password, addr)
    response = RedirectResponse("/profile?done=password", status_code=303)
    _session_cookie(response, request, token.access_token, settings.session_ttl_minutes * 60)
    return response


# ---------------------------------------------------------------- API documentation, offline


# Swagger UI and ReDoc as the `fastapi-offline` package ships them (only its files are used): its
# Swagger UI reads OpenAPI 3.1, which FastAPI writes (the older `swagger-ui-bundle` could not).
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
REDOC_BUNDLE = DOCS_ASSETS / "redoc.standalone.js"


# Swagger UI sets inline styles and shows its logo as a data: image; it runs nothing inline.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI from the files installed with the app (`fastapi-offline`'s): no CDN, it works
    without the Internet. Its start-up script is a file of ours (`static/apidocs.js`)."""
    return templates.TemplateResponse(
        request,
        "apidocs.html",
        {"locale": page_locale(request, None), "openapi_url": request.app.openapi_url or "/openapi.json"},
        headers={**PAGE_HEADERS, "Content-Security-Policy": DOCS_POLICY},
    )


# ReDoc styles itself inline (styled-components), shows icons as data: images and runs its search
# in a worker made from a blob: URL; its fonts are the page's own (no font service). The one outside
# address in its bundle, an attribution logo, is refused by img-src before any request.
REDOC_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
)


@router.get("/redoc", response_class=HTMLResponse)
def api_reference(request: Request) -> HTMLResponse:
    """ReDoc, the same OpenAPI document as a reference to read, from the bundle installed with the
    app: no CDN. Its start-up script is a file of ours (`static/redoc-start.js`)."""
    return templates.TemplateResponse(
        request,
        "redoc.html",
        {"locale": page_locale(request, None), "openapi_url": request.app.openapi_url or "/openapi.json"},
        headers={**PAGE_HEADERS, "Content-Security-Policy": REDOC_POLICY},
    )


@router.get("/static/docs/redoc.standalone.js")
def redoc_asset() -> FileResponse:
    return FileResponse(REDOC_BUNDLE, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/static/docs/{name}")
def swagger_asset(name: str) -> FileResponse:
    if name not in SWAGGER_FILES:
        raise NotFound("not_found", "no such file")
    return FileResponse(
        DOCS_ASSETS / name, media_type=SWAGGER_FILES[name], headers={"Cache-Control": "max-age=86400"}
    )
