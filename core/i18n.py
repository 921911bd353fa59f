"""Strings in English, French and German through gettext catalogs (Babel).

Message ids are the English text itself (`t("Hello, {name}", name=x)`): the text is translated
first, then formatted. The catalogs are extracted from the portal's, the notifications' and the
visitors' sources (`make i18n`), kept as `portal/locale/<lang>/LC_MESSAGES/messages.po`, and
compiled to `.mo` files shipped with the package.

The language of a page: the user's explicit choice first, then the browser's Accept-Language,
then the site's locale.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel.support import Translations

from config.settings import SUPPORTED_LOCALES

# The catalogs live beside the portal's templates (a path, not an import: core imports no portal).
LOCALE_DIR = Path(__file__).resolve().parent.parent / "portal" / "locale"
DOMAIN = "messages"


def N_(msgid: str) -> str:
    """Mark a string for extraction where it is translated later (an enum's labels, a table)."""
    return msgid


# Message keys of the first catalogs, before the English text became the message id: call sites
# that still say `t("doors.title")` get the same translation as `t("Doors and controllers")`.
LEGACY: dict[str, str] = {
    "login.title": N_("Sign in"),
    "login.email": N_("Email"),
    "login.password": N_("Password"),
    "login.submit": N_("Sign in"),
    "login.failed": N_("Wrong email or password."),
    "login.throttled": N_("Too many failed attempts. Try again later."),
    "home.hello": N_("Hello, {name}"),
    "home.roles": N_("Your roles"),
    "home.venues": N_("Places you can book"),
    "nav.logout": N_("Sign out"),
    "nav.api": N_("API documentation"),
    "nav.doors": N_("Doors and controllers"),
    "nav.home": N_("Home"),
    "doors.title": N_("Doors and controllers"),
    "doors.live": N_("Live: this page refreshes every 5 seconds"),
    "doors.controllers": N_("Controllers"),
    "doors.controller": N_("Controller"),
    "doors.state": N_("State"),
    "doors.last_seen": N_("Last seen"),
    "doors.doors": N_("Doors"),
    "doors.door": N_("Door"),
    "doors.now": N_("Allowed now"),
    "doors.coming": N_("Coming grants"),
    "doors.events": N_("Latest door events"),
    "doors.no_events": N_("No door events yet."),
    "state.online": N_("online"),
    "state.offline": N_("offline"),
    "state.degraded": N_("degraded"),
    "state.unknown": N_("unknown"),
    "event.granted": N_("granted"),
    "event.denied": N_("denied"),
    "event.forced": N_("forced"),
    "event.held_open": N_("held open"),
    "event.tamper": N_("tamper"),
    "event.unknown": N_("unknown"),
    "forbidden.title": N_("This page is not available to your role."),
}

LOCALE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch"}


def local_name(row: Any, locale: str) -> str:
    """A site's, venue's or resource's name in `locale` when the site file gives one, else its
    default name (anything without `names`, e.g. a door, is its `name`)."""
    names = getattr(row, "names", None) or {}
    return str(names.get(locale) or row.name)


def parse_accept_language(header: str | None) -> list[str]:
    """The supported languages an Accept-Language header asks for, best first (q-values honoured)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = tag.strip().lower().split("-")[0]
        if q > 0 and lang in SUPPORTED_LOCALES:
            ranked.append((-q, i, lang))
    out: list[str] = []
    for _, _, lang in sorted(ranked):
        if lang not in out:
            out.append(lang)
    return out


def pick_locale(user_locale: str | None, accept_language: str | None, default: str = "en") -> str:
    """`user_locale` is the user's explicit choice (None when they never chose); then the browser's
    languages; then `default`, the site's locale."""
    if user_locale in SUPPORTED_LOCALES:
        return user_locale
    wanted = parse_accept_language(accept_language)
    if wanted:
        return wanted[0]
    return default if default in SUPPORTED_LOCALES else "en"


@lru_cache(maxsize=8)
def catalog(locale: str) -> NullTranslations:
    """The compiled catalog of a language (English, the source language, needs none)."""
    if locale not in SUPPORTED_LOCALES or locale == "en":
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [locale], DOMAIN)


def translator(locale: str) -> Callable[..., str]:
    """`t(msgid, **kwargs)`: the translation of the English `msgid`, then `str.format(**kwargs)`."""
    translations = catalog(locale)

    def t(msgid: str, **kwargs: object) -> str:
        text = translations.gettext(LEGACY.get(msgid, msgid))
        return text.format(**kwargs) if kwargs else text

    return t
