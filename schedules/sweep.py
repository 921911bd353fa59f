"""Walking reservations in id-ordered batches, each batch claimed by one runner.

On PostgreSQL each batch is locked `FOR UPDATE SKIP LOCKED`, so two gateway nodes sweeping at
once never take the same row; on SQLite a write transaction holds the single writer lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bms.models import Reservation
from core.db import ident, write_session


def sweep(engine: Engine, where: list[Any], handle: Callable[[Session, Reservation], bool], *, batch: int = 200) -> int:
    """Call `handle` on every reservation matching `where`; returns how many it acted on."""
    done = 0
    after_id = 0
    while True:
        with write_session(engine) as s:
            rows = s.exec(
                select(Reservation)
                .where(*where, col(Reservation.id) > after_id)
                .order_by(col(Reservation.id))
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return done
            after_id = ident(rows[-1])
            done += sum(1 for r in rows if handle(s, r))
