"""A site's message settings, from its site file: which reminders go out before a booking, and
whether (and how long after its end) a completed booking's planner gets a follow-up.

They sit with the booking rules (`reminder_minutes`, `follow_up`, `follow_up_minutes`), so the
site's `defaults` set them and a venue or resource may override them, field by field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlmodel import Session, select

from bms.context import ResourceCtx
from bms.models import Resource
from config.site import merge_rules
from core.models import Site, Venue

DEFAULT_REMINDERS = (24 * 60, 60)
DEFAULT_FOLLOW_UP_MINUTES = 60


@dataclass(frozen=True)
class MessageSettings:
    reminders: tuple[int, ...]  # minutes before the start, longest first; () = none
    follow_up: bool
    follow_up_after: timedelta


@lru_cache(maxsize=1024)
def _build(site: str, venue: str, resource: str) -> MessageSettings:
    r = merge_rules(json.loads(site), json.loads(venue), json.loads(resource))
    chosen = r.reminder_minutes
    reminders = DEFAULT_REMINDERS if chosen is None else tuple(sorted(set(chosen), reverse=True))
    minutes = r.follow_up_minutes if r.follow_up_minutes is not None else DEFAULT_FOLLOW_UP_MINUTES
    return MessageSettings(reminders, bool(r.follow_up), timedelta(minutes=minutes))


def _dump(layer: dict[str, Any] | None) -> str:
    return json.dumps(layer or {}, sort_keys=True, default=str)


def for_resource(ctx: ResourceCtx) -> MessageSettings:
    """The settings in force for one resource (site defaults < venue < resource)."""
    return _build(_dump(ctx.site.defaults), _dump(ctx.venue.rules), _dump(ctx.resource.rules))


def widest_reminder(session: Session) -> int:
    """The longest reminder any site, venue or resource asks for, in minutes (0 if none at all):
    how far ahead the reminder job has to look."""
    widest = max(DEFAULT_REMINDERS)
    for column in (Site.defaults, Venue.rules, Resource.rules):
        for layer in session.exec(select(column)).all():
            minutes = (layer or {}).get("reminder_minutes") if isinstance(layer, dict) else None
            if minutes:
                widest = max(widest, *(int(m) for m in minutes))
    return widest
