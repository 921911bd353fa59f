"""Pending requests that no manager decided in time become `expired`, and the requester is told.

The deadline is per resource (EffectiveRules.pending_expiry after the request, never after its
start), so candidates are read in id-ordered batches and filtered in Python. Safe on several
processes at once: on PostgreSQL each batch is claimed `FOR UPDATE SKIP LOCKED`, so two runners
never take the same row (see `schedules.sweep`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, or_
from sqlmodel import Session, col

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.service import set_status
from bms.states import Status
from core.audit import SYSTEM
from moderation.service import deadline, void_proposals
from schedules.sweep import sweep

# No resource expires a request sooner than this (Rules.pending_expiry_hours >= 1).
_SHORTEST = timedelta(hours=1)


def expire_pending(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    """Expire every pending request past its deadline at `now`; return how many this call expired."""

    def expire(s: Session, r: Reservation) -> bool:
        ctx = load_resource_by_id(s, r.resource_id)
        if now < deadline(r, ctx):
            return False
        set_status(s, SYSTEM, r, ctx, Status.expired, "no manager decided in time", now, action="moderation.expire")
        void_proposals(s, r, now)
        return True

    where = [
        col(Reservation.status) == Status.pending.value,
        or_(col(Reservation.start) <= now, col(Reservation.created_at) <= now - _SHORTEST),
    ]
    return sweep(engine, where, expire, batch=batch)
