"""Messages rendered in the recipient's language: a subject, a text part and an HTML part from
the templates in notify/templates (Jinja2; `<name>.txt` and `<name>.html`, sharing `_base.*`).

Strings go through the portal's catalogs (`core.i18n.translator`) with the English text as the
message id. A string a catalog lacks, or whose translation cannot be filled in, falls back to
English; each such string is logged once per language, never failing the message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_time
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from config.settings import SUPPORTED_LOCALES
from core.i18n import translator

log = logging.getLogger("notify.render")

TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_missing: set[tuple[str, str]] = set()
_missing_lock = threading.Lock()

Translate = Callable[..., str]


def _note_missing(locale: str, msgid: str) -> None:
    with _missing_lock:
        if (locale, msgid) in _missing:
            return
        _missing.add((locale, msgid))
    log.warning("no %s translation for %r: sent in English", locale, msgid)


def translate(locale: str) -> Translate:
    """`t(msgid, **values)` for one language, English when the catalog lacks the string."""
    locale = locale if locale in SUPPORTED_LOCALES else "en"
    english = translator("en")
    local = translator(locale)

    def fill(msgid: str, values: dict[str, Any]) -> str:
        try:
            return english(msgid, **values)
        except (KeyError, IndexError, ValueError):
            return msgid

    def t(msgid: str, **values: Any) -> str:
        if locale == "en":
            return fill(msgid, values)
        try:
            out = local(msgid, **values)
        except (KeyError, IndexError, ValueError):
            _note_missing(locale, msgid)
            return fill(msgid, values)
        if out == fill(msgid, values):
            _note_missing(locale, msgid)
        return out

    return t


def when(start: datetime, end: datetime, zone: str, locale: str) -> str:
    """`Tuesday, 1 December 2026, 18:00 - 19:00 (Europe/Paris)` in the recipient's language."""
    tz = ZoneInfo(zone)
    s, e = start.astimezone(tz), end.astimezone(tz)
    loc = locale if locale in SUPPORTED_LOCALES else "en"
    first = format_datetime(s, format="EEEE d MMMM y, HH:mm", locale=loc)
    last = (
        format_time(e, format="HH:mm", locale=loc)
        if s.date() == e.date()
        else format_datetime(e, format="EEEE d MMMM y, HH:mm", locale=loc)
    )
    return f"{first} - {last} ({zone})"


_DEFAULTS: dict[str, Any] = {
    "name": "",
    "site": "",
    "portal": "",
    "when": "",
    "reason": "",
    "before": "",
    "error": "",
    "door": "",
    "holder": "",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(template: str, subject: str, locale: str, values: dict[str, Any]) -> Rendered:
    """Fill one message kind's templates; `subject` is an English message id over `values`."""
    t = translate(locale)
    values = {**_DEFAULTS, **values}
    subject_line = t(subject, **values)
    ctx = {**values, "t": t, "locale": locale, "subject_line": subject_line}
    return Rendered(
        subject=subject_line,
        text=_env.get_template(f"{template}.txt").render(ctx),
        html=_env.get_template(f"{template}.html").render(ctx),
    )


def template_names() -> set[str]:
    return {p.stem for p in TEMPLATES.glob("*.txt") if not p.stem.startswith("_")}
