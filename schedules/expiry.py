"""Pending requests that no manager decided in time become `expired`, and the requester is told.

The deadline is per resource (EffectiveRules.pending_expiry after the request, never after its
start), so candidates are read in id-ordered batches and filtered in Python. Safe on several
processes at once: on PostgreSQL each batch is claimed `FOR UPDATE SKIP LOCKED`, so two runners
never take the same row; on SQLite a write transaction holds the single writer lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, or_
from sqlmodel import select

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.service import set_status
from bms.states import Status
from bookgate.audit import SYSTEM
from bookgate.db import write_session
from moderation.service import deadline, void_proposals

# No resource expires a request sooner than this (Rules.pending_expiry_hours >= 1).
_SHORTEST = timedelta(hours=1)


def expire_pending(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    """Expire every pending request past its deadline at `now`; return how many this call expired."""
    expired = 0
    after_id = 0
    while True:
        with write_session(engine) as s:
            rows = s.exec(
                select(Reservation)
                .where(
                    Reservation.status == Status.pending.value,
                    Reservation.id > after_id,
                    or_(Reservation.start <= now, Reservation.created_at <= now - _SHORTEST),
                )
                .order_by(Reservation.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return expired
            after_id = rows[-1].id  # type: ignore[assignment]
            for r in rows:
                ctx = load_resource_by_id(s, r.resource_id)
                if now < deadline(r, ctx):
                    continue
                set_status(
                    s, SYSTEM, r, ctx, Status.expired, "no manager decided in time", now, action="moderation.expire"
                )
                void_proposals(s, r, now)
                expired += 1
