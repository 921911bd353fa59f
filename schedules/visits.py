"""The visitors' periodic jobs: automatic check-out (closing time, N hours after check-in) with a
notice to reception, no-shows of invitations whose window is over, and the retention purge.

Each batch is its own unit of work; rows are claimed `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
several gateway nodes may run them side by side.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from core.db import write_session
from vms import service


def auto_check_out(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    done = 0
    after: int | None = 0
    while after is not None:
        with write_session(engine) as s:
            n, after = service.auto_check_out(s, now, after_id=after, batch=batch)
        done += n
    return done


def no_shows(engine: Engine, now: datetime, *, batch: int = 200) -> int:
    total = 0
    while True:
        with write_session(engine) as s:
            n = service.mark_no_shows(s, now, batch=batch)
        total += n
        if n < batch:
            return total


def purge(engine: Engine, now: datetime, *, dry_run: bool = False) -> int:
    with write_session(engine) as s:
        return len(service.purge(s, now, dry_run=dry_run))
