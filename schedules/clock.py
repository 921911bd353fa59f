"""APScheduler as the clock, never the store: periodic jobs read what to do from the database,
so a restart loses nothing and several gateway nodes may run them side by side."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from bookgate.db import utcnow
from schedules.dispatch import Send, dispatch_once
from schedules.expiry import expire_pending

log = logging.getLogger("bookgate.schedules")


def _expire(engine: Engine) -> None:
    try:
        n = expire_pending(engine, utcnow())
    except Exception:
        log.exception("expiring pending requests failed; the next run retries")
        return
    if n:
        log.info("expired %d pending request(s)", n)


def _dispatch(engine: Engine, send: Send) -> None:
    try:
        dispatch_once(engine, send)
    except Exception:
        log.exception("dispatching due transitions failed; the next run retries")


def start_clock(
    engine: Engine, *, expiry_every_seconds: int = 60, send: Send | None = None, dispatch_every_seconds: float = 1.0
) -> BackgroundScheduler:
    """Periodic jobs; with a driver's `send`, the dispatcher too (due rows are read from the DB)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    if send is not None:
        scheduler.add_job(
            _dispatch,
            "interval",
            seconds=dispatch_every_seconds,
            args=[engine, send],
            id="dispatch",
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
    scheduler.add_job(
        _expire,
        "interval",
        seconds=expiry_every_seconds,
        args=[engine],
        id="expire-pending",
        max_instances=1,
        coalesce=True,
        next_run_time=utcnow(),
    )
    scheduler.start()
    return scheduler
