"""No-shows: a confirmed booking nobody checked in within N minutes of its start (per resource,
`access.no_show_minutes`) becomes `no_show`; that releases its slot and revokes its grants.

Safe on several processes at once, like expiry: batches are claimed `FOR UPDATE SKIP LOCKED` on
PostgreSQL, and SQLite has one writer. Resources without the setting never mark no-shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import select

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.service import set_status
from bms.states import Status
from bookgate.audit import SYSTEM
from bookgate.db import write_session

# AccessPolicy.no_show_minutes lies in 1 .. 24 h: nothing outside this range can be due.
_SHORTEST, _LONGEST = timedelta(minutes=1), timedelta(hours=24)


def mark_no_shows(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    """Mark every booking past its check-in deadline at `now`; return how many this call marked."""
    marked = 0
    after_id = 0
    while True:
        with write_session(engine) as s:
            rows = s.exec(
                select(Reservation)
                .where(
                    Reservation.status == Status.confirmed.value,
                    Reservation.id > after_id,
                    Reservation.start <= now - _SHORTEST,
                    Reservation.start > now - _LONGEST - _SHORTEST,
                )
                .order_by(Reservation.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return marked
            after_id = rows[-1].id  # type: ignore[assignment]
            for r in rows:
                ctx = load_resource_by_id(s, r.resource_id)
                minutes = ctx.rules.access.no_show_minutes
                if minutes is None or now < r.start + timedelta(minutes=minutes):
                    continue
                set_status(
                    s,
                    SYSTEM,
                    r,
                    ctx,
                    Status.no_show,
                    f"nobody checked in within {minutes} minutes of the start",
                    now,
                    action="reservation.no_show",
                )
                marked += 1
