"""The portal's shared layout: templates, the session cookie, the navigation, the language,
dates in the site's zone, rendering and the guards every page uses.

The cookie carries the same opaque session token as the API's bearer header; it is HttpOnly
and SameSite=Lax, and state-changing forms also check the Origin header.

Navigation: `base.html` renders `NAV`, filtered by role. A page module adds its entry with one
line, e.g. ``NAV.append(NavItem("/moderation", N_("Moderation"), (Role.venue_manager,)))``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton, format_time
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select

from config.settings import SUPPORTED_LOCALES
from core import auth
from core.auth import Principal
from core.db import open_session
from core.deps import SESSION_COOKIE, same_origin
from core.errors import AppError, Forbidden
from core.i18n import LOCALE_NAMES, N_, local_name, pick_locale, translator
from core.models import Role, Site, Venue

COOKIE = SESSION_COOKIE
# The user's explicit choice of language (the switcher on every page); without it, the browser's.
LANG_COOKIE = "bookgate_lang"
STATIC_DIR = Path(__file__).parent / "static"

# Pages load nothing but this site's own files: scripts and styles from here only (no inline
# script or style), no framing (clickjacking), forms post only here. (`core.deps.SecurityHeaders`
# adds nosniff and the referrer policy to every response.)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

ANYONE = "*"  # any signed-in user


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation: shown to users holding one of `roles` (ANYONE: everyone signed in)."""

    path: str
    label: str  # an English message id, translated when rendered
    roles: tuple[str, ...] = (ANYONE,)

    def visible_to(self, principal: Principal) -> bool:
        return ANYONE in self.roles or principal.has_any(*self.roles)


NAV: list[NavItem] = [
    NavItem("/", N_("Home")),
    NavItem("/book", N_("Book"), (Role.resident.value,)),
    NavItem("/reservations", N_("My reservations"), (Role.resident.value,)),
    NavItem("/doors", N_("Doors and controllers"), (Role.venue_manager.value, Role.reception.value)),
    NavItem("/profile", N_("My profile")),
]


def nav_for(principal: Principal | None) -> list[NavItem]:
    return [item for item in NAV if principal is not None and item.visible_to(principal)]


# ---------------------------------------------------------------- language


def site_locale(request: Request, principal: Principal | None) -> str:
    """The locale of the user's site (their first one), else the installation's."""
    settings = getattr(request.app.state, "settings", None)
    fallback = getattr(settings, "locale", "en")
    if principal is None:
        return fallback
    site_ids = principal.resident_sites | principal.reception_sites
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not (site_ids or principal.managed_venues):
        return fallback
    with open_session(engine) as s:
        stmt = select(Site.locale).order_by(col(Site.id))
        if site_ids:
            stmt = stmt.where(col(Site.id).in_(site_ids))
        else:
            stmt = stmt.join(Venue, col(Venue.site_id) == Site.id).where(col(Venue.id).in_(principal.managed_venues))
        found = s.exec(stmt).first()
    return found or fallback


def chosen_locale(request: Request, principal: Principal | None = None) -> str | None:
    """The language chosen: the account's choice when signed in, else this browser's (the
    switcher's cookie, for visitors not signed in)."""
    if principal is not None and principal.locale in SUPPORTED_LOCALES:
        return principal.locale
    value = request.cookies.get(LANG_COOKIE)
    return value if value in SUPPORTED_LOCALES else None


def page_locale(request: Request, principal: Principal | None) -> str:
    """The account's choice, then the browser's Accept-Language, then the site's language."""
    return pick_locale(
        chosen_locale(request, principal), request.headers.get("accept-language"), site_locale(request, principal)
    )


# ---------------------------------------------------------------- dates in the site's zone


class Dates:
    """Dates and times for one locale (with the browser's region when it has one of that
    language: en-GB writes 16:00, en-US 4:00 PM), shown in a site's zone."""

    def __init__(self, locale: str, accept_language: str | None = None) -> None:
        self.locale = locale
        self._times: dict[tuple[datetime, tzinfo], str] = {}
        for part in (accept_language or "").split(","):
            tag = part.split(";")[0].strip()
            if tag.lower().startswith(locale + "-"):
                try:
                    self.locale = str(Locale.parse(tag, sep="-"))
                except (ValueError, UnknownLocaleError):
                    continue
                break

    def day(self, value: date | datetime, tz: tzinfo | None = None) -> str:
        """'Monday, 7 December 2026' in the locale's words."""
        d = value.astimezone(tz).date() if isinstance(value, datetime) else value
        return format_date(d, "full", locale=self.locale)

    def short_day(self, value: date | datetime, tz: tzinfo | None = None) -> str:
        d = value.astimezone(tz).date() if isinstance(value, datetime) else value
        return format_skeleton("MMMEd", d, locale=self.locale)

    def time(self, value: datetime, tz: tzinfo) -> str:
        """'16:00' or '4:00 PM'; a calendar shows the same few times many times: each is formatted once."""
        key = (value, tz)
        text = self._times.get(key)
        if text is None:
            text = self._times[key] = format_time(value, "short", tzinfo=tz, locale=self.locale)
        return text

    def when(self, start: datetime, end: datetime, tz: tzinfo) -> str:
        """'Mon 7 Dec 2026, 18:00-19:00 (with an en dash)' (the end's date too when it is another day)."""
        head = format_skeleton("yMMMEd", start, tzinfo=tz, locale=self.locale)
        same_day = start.astimezone(tz).date() == end.astimezone(tz).date()
        tail = (
            self.time(end, tz)
            if same_day
            else format_skeleton("MMMEd", end, tzinfo=tz, locale=self.locale) + ", " + self.time(end, tz)
        )
        return f"{head}, {self.time(start, tz)}\u2013{tail}"

    def stamp(self, value: datetime, tz: tzinfo) -> str:
        """A moment with its date: 'Mon 7 Dec 2026, 18:00'."""
        return format_skeleton("yMMMEd", value, tzinfo=tz, locale=self.locale) + ", " + self.time(value, tz)


# ---------------------------------------------------------------- rendering


def new_form_token() -> str:
    """A one-time token for a form that writes: a double submission is recognised and done once."""
    return secrets.token_urlsafe(18)


def render(request: Request, name: str, principal: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    locale = page_locale(request, principal)
    return templates.TemplateResponse(
        request,
        name,
        {
            "t": translator(locale),
            "locale": locale,
            "locales": LOCALE_NAMES,
            "me": principal,
            "nav": nav_for(principal),
            "path": request.url.path,
            "dates": Dates(locale, request.headers.get("accept-language")),
            "named": lambda row: local_name(row, locale),
            **ctx,
        },
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


class ShowPage(Exception):
    """Raised by a page that writes in the request's unit of work (`WriteSessionDep`) when a
    service refused: the unit of work rolls back, and the user gets `response` (the form again,
    with the reason next to the field). Rendered by `portal.errors.install`."""

    def __init__(self, response: Response) -> None:
        super().__init__("page refused")
        self.response = response


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def require_page(request: Request, engine: Any, *roles: Role) -> Principal | HTMLResponse | RedirectResponse:
    """The signed-in user, or the answer to give instead: the sign-in page, or 403 when the user
    holds none of `roles` (when given)."""
    principal = current(request, engine)
    if principal is None:
        return to_login()
    if roles and not principal.has_any(*roles):
        return render(request, "forbidden.html", principal, status=403)
    return principal
