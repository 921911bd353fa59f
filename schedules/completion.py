"""Completed bookings: after its end, a booking that was used becomes `completed`, and its planner
may get a follow-up message (a site setting, `follow_up` and `follow_up_minutes`).

Which bookings: checked-in ones; and confirmed ones of resources that take no check-in (no
`access.no_show_minutes`): where check-in applies, a confirmed booking nobody checked in is the
no-show job's (`schedules.noshow`), never completed. A booking completes once its slot, buffer and
access window are all over, so its door access is not cut short by the change. The status changes
through `bms.status.set_status` (audited, announced, access synced); the follow-up is written to
the outbox in the same transaction, available from end + delay, so it goes out once.

Safe on several processes at once (see `schedules.sweep`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.states import Status
from bms.status import event_payload, set_status
from core import outbox
from core.audit import SYSTEM
from notify.settings import for_resource
from schedules.sweep import sweep

FOLLOW_UP = "reservation.follow_up"


def over_at(r: Reservation) -> datetime:
    """When nothing of a booking is left: its end, buffer and access window."""
    return max(r.end, r.block_end, r.access_end)


def complete_finished(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    """Complete every booking over at `now`; return how many this call completed."""

    def finish(s: Session, r: Reservation) -> bool:
        if now < over_at(r):
            return False
        ctx = load_resource_by_id(s, r.resource_id)
        if r.status == Status.confirmed.value and ctx.rules.access.no_show_minutes is not None:
            return False  # check-in applies: the no-show job decides
        set_status(s, SYSTEM, r, ctx, Status.completed, "the booking is over", now, action="reservation.complete")
        settings = for_resource(ctx)
        if settings.follow_up:
            outbox.enqueue(
                s,
                FOLLOW_UP,
                {**event_payload(r, ctx), "venue": ctx.venue.key, "recipients": [r.planner_id]},
                available_at=max(now, r.end + settings.follow_up_after),
            )
        return True

    where = [
        col(Reservation.status).in_([Status.checked_in.value, Status.confirmed.value]),
        col(Reservation.end) <= now,
    ]
    return sweep(engine, where, finish, batch=batch)
