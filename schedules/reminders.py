"""Reminders before a booking, written to the outbox by a periodic job.

Which reminders a booking gets is a site setting (`reminder_minutes` in the site file's rules,
24 h and 1 h when unset, none for `[]`; see `notify.settings`). Each reminder is remembered by
(booking, offset, start time) in the same transaction that writes it, so it goes out once however
many nodes run the job, and again if the booking moves. A booking made after a reminder's time
gets no such reminder; a job that was down sends only the nearest reminder still ahead, never a
stale 24 h one an hour before. People who turned reminders off are left out when the message is
expanded (`notify.messages`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import col, select

from bms.context import load_resource_by_id
from bms.models import Reservation, Resource
from bms.states import Status
from core import outbox
from core.db import is_sqlite, write_session
from notify.models import ReminderSent
from notify.settings import DEFAULT_REMINDERS, for_resource, widest_reminder

OFFSETS_MINUTES = DEFAULT_REMINDERS
KIND = "reservation.reminder"


def write_due_reminders(engine: Engine, now: datetime, offsets: tuple[int, ...] | None = None) -> int:
    """Write every reminder due at `now`; return how many. `offsets` (minutes) overrides the
    sites' settings for every booking."""
    written = 0
    with write_session(engine) as s:
        widest_minutes = max(offsets) if offsets else (0 if offsets is not None else widest_reminder(s))
        if not widest_minutes:
            return 0
        widest = timedelta(minutes=widest_minutes)
        stmt = (
            select(Reservation, Resource.key)
            .join(Resource, col(Resource.id) == Reservation.resource_id)
            .where(
                col(Reservation.status) == Status.confirmed.value,
                col(Reservation.start) > now,
                col(Reservation.start) <= now + widest,
            )
            .order_by(col(Reservation.start))
            .limit(5000)
        )
        if not is_sqlite(s):
            stmt = stmt.with_for_update(skip_locked=True, of=Reservation)
        rows = s.exec(stmt).all()
        if not rows:
            return 0
        sent = {
            (rid, off, start)
            for rid, off, start in s.exec(
                select(ReminderSent.reservation_id, ReminderSent.offset_minutes, ReminderSent.start).where(
                    col(ReminderSent.reservation_id).in_([r.id for r, _ in rows])
                )
            ).all()
        }
        for r, resource_key in rows:
            wanted = offsets if offsets is not None else for_resource(load_resource_by_id(s, r.resource_id)).reminders
            due = [
                off
                for off in wanted
                if r.start - timedelta(minutes=off) <= now
                and r.created_at < r.start - timedelta(minutes=off)
                and (r.id, off, r.start) not in sent
            ]
            if not due:
                continue
            for off in due:
                s.add(ReminderSent(reservation_id=r.id or 0, offset_minutes=off, start=r.start))
            outbox.enqueue(
                s,
                KIND,
                {
                    "reservation_id": r.id,
                    "resource": resource_key,
                    "start": r.start.isoformat(),
                    "end": r.end.isoformat(),
                    "status": r.status,
                    "offset_minutes": min(due),
                },
            )
            written += 1
    return written
