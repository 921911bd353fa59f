"""No-shows: a confirmed booking nobody checked in within N minutes of its start (per resource,
`access.no_show_minutes`) becomes `no_show`; that releases its slot and revokes its grants.

Safe on several processes at once (see `schedules.sweep`). Resources without the setting never mark no-shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.service import set_status
from bms.states import Status
from core.audit import SYSTEM
from schedules.sweep import sweep

# AccessPolicy.no_show_minutes lies in 1 .. 24 h: nothing outside this range can be due.
_SHORTEST, _LONGEST = timedelta(minutes=1), timedelta(hours=24)


def mark_no_shows(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    """Mark every booking past its check-in deadline at `now`; return how many this call marked."""

    def mark(s: Session, r: Reservation) -> bool:
        ctx = load_resource_by_id(s, r.resource_id)
        minutes = ctx.rules.access.no_show_minutes
        if minutes is None or now < r.start + timedelta(minutes=minutes):
            return False
        reason = f"nobody checked in within {minutes} minutes of the start"
        set_status(s, SYSTEM, r, ctx, Status.no_show, reason, now, action="reservation.no_show")
        return True

    where = [
        col(Reservation.status) == Status.confirmed.value,
        col(Reservation.start) <= now - _SHORTEST,
        col(Reservation.start) > now - _LONGEST - _SHORTEST,
    ]
    return sweep(engine, where, mark, batch=batch)
