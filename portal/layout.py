"""The portal's shared layout: templates, the session cookie, rendering and the guards every
page uses.

The cookie carries the same opaque session token as the API's bearer header; it is HttpOnly
and SameSite=Lax, and state-changing forms also check the Origin header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from core import auth
from core.auth import Principal
from core.db import open_session
from core.deps import SESSION_COOKIE, same_origin
from core.errors import AppError, Forbidden
from core.i18n import pick_locale, translator

COOKIE = SESSION_COOKIE
STATIC_DIR = Path(__file__).parent / "static"

# Pages load nothing but this site's own stylesheet: no script at all, no inline style, no
# framing (clickjacking), forms post only here. (`core.deps.SecurityHeaders` adds nosniff and the
# referrer policy to every response.)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(request: Request, name: str, principal: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    locale = pick_locale(principal.locale if principal else None, request.headers.get("accept-language"))
    return templates.TemplateResponse(
        request,
        name,
        {"t": translator(locale), "locale": locale, "me": principal, **ctx},
        status_code=status,
        headers=PAGE_HEADERS,
    )


def check_origin(request: Request) -> None:
    """Refuse cross-site form posts: the Origin (else Referer, else Sec-Fetch-Site) must say this
    host. A post that says nothing of where it comes from is let through here: the sign-in form
    needs no cookie, and the cookie's own requests to the API are held to `check_cookie_origin`."""
    if same_origin(request) is False:
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
