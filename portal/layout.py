"""The portal's shared layout: templates, the session cookie, rendering and the guards every
page uses.

The cookie carries the same opaque session token as the API's bearer header; it is HttpOnly
and SameSite=Lax, and state-changing forms also check the Origin header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from core import auth
from core.auth import Principal
from core.db import open_session
from core.errors import AppError, Forbidden
from core.i18n import pick_locale, translator

COOKIE = "bookgate_session"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


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
