"""APScheduler as the clock, never the store: jobs read what to do from the database, so a
restart loses nothing and several gateway nodes may run them side by side.

The dispatcher has an exact wake-up: after each run the job's next fire time is moved to the
earliest pending transition, and a commit in this process that writes an earlier one moves it
again (an `after_commit` hook reads what `access.transitions` noted on the session). The interval
under it is only the safety net for rows written by other nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, Engine

from access.decisions import trim_changes
from access.levels import LEVELS_EVERY_MINUTES, replan_levels
from access.transitions import NEXT_DUE
from core import db
from core.db import utcnow, write_session
from schedules import visits as visit_jobs
from schedules.completion import complete_finished
from schedules.dispatch import Send, SendMany, dispatch_once, next_due
from schedules.expiry import expire_pending
from schedules.noshow import mark_no_shows

log = logging.getLogger("bookgate.schedules")


class _DispatchBusy(logging.Filter):
    """A dispatch fire time that falls during a run is expected (the run goes round again for it):
    APScheduler's warning about it says nothing to an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("maximum number of running instances" in message and "dispatch" in message)


def _guard(name: str, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            n = fn()
        except Exception:
            log.exception("%s failed; the next run retries", name)
            return
        if n:
            log.info("%s: %s", name, n)

    return run


class Clock:
    def __init__(self, engine: Engine, scheduler: BackgroundScheduler, dispatching: bool) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.dispatching = dispatching
        self.closed = False
        self._lock = threading.Lock()
        # While a dispatch runs, APScheduler skips the job's fire times ("maximum number of running
        # instances"): a wake-up then is kept here and honoured when the run ends.
        self.running = False
        self.woken_while_running: datetime | None = None

    def wake(self, at: datetime) -> None:
        """Run the dispatcher at `at` unless it is already due to run sooner."""
        if not self.dispatching:
            return
        with self._lock:
            if self.closed:
                return
            if self.running:
                held = self.woken_while_running
                self.woken_while_running = at if held is None or at < held else held
                return
            try:
                job = self.scheduler.get_job("dispatch")
            except Exception:  # scheduler shut down
                return
            if job is None:
                return
            at = max(at, utcnow())
            if job.next_run_time is None or at < job.next_run_time:
                try:
                    job.modify(next_run_time=at)
                except JobLookupError:
                    return

    # A transaction that wrote transitions leaves its earliest due time on its connection; the
    # clock listens to its own engine's commits only (no process-wide listener, so two apps in
    # one process never wake each other). The commit event comes just before the database
    # commits: a dispatch woken by it that finds nothing yet asks next_due() afterwards and wakes
    # again, so nothing waits for the safety-net poll.
    def _on_commit(self, conn: Connection) -> None:
        due = conn.info.pop(NEXT_DUE, None)
        if due is not None:
            self.wake(due)

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(NEXT_DUE, None)

    def listen(self) -> None:
        db.listen(self.engine, "commit", self._on_commit)
        db.listen(self.engine, "rollback", self._on_rollback)

    def shutdown(self, wait: bool = True) -> None:
        # APScheduler's shutdown holds its job-store lock while it waits for running jobs, and a
        # running dispatch ends with a wake-up that needs that lock: close the door first.
        with self._lock:
            self.closed = True
        for name, fn in (("commit", self._on_commit), ("rollback", self._on_rollback)):
            db.unlisten(self.engine, name, fn)
        self.scheduler.shutdown(wait=wait)


def start_clock(
    engine: Engine,
    *,
    expiry_every_seconds: int = 60,
    send: Send | None = None,
    send_many: SendMany | None = None,
    dispatch_every_seconds: float = 1.0,
    reconcile: Callable[[], object] | None = None,
    reconcile_every_seconds: int = 600,
    lease_seconds: int = 60,
    pipeline: int = 1,
    supervise: Callable[[], object] | None = None,
    listen: bool = True,
) -> Clock:
    """Periodic jobs; with a driver's `send`/`send_many`, the dispatcher and reconcile too.
    ``listen=False``: the caller routes commits' wake-ups to `Clock.wake` itself (a server of
    several workers, whose listeners are all in place before any traffic)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    apscheduler_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _DispatchBusy) for f in apscheduler_log.filters):
        apscheduler_log.addFilter(_DispatchBusy())
    dispatching = send is not None or send_many is not None
    clock = Clock(engine, scheduler, dispatching)
    every = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    if dispatching:

        def dispatch() -> None:
            for _round in range(20):  # bounded: the interval job comes back anyway
                with clock._lock:
                    clock.running, clock.woken_while_running = True, None
                upcoming: datetime | None = None
                try:
                    dispatch_once(
                        engine,
                        send,
                        send_many=send_many,
                        lease=timedelta(seconds=lease_seconds),
                        stopping=lambda: clock.closed,
                        pipeline=pipeline,
                    )
                    upcoming = next_due(engine)
                except Exception:
                    log.exception("dispatching due transitions failed; the next run retries")
                finally:
                    with clock._lock:
                        clock.running = False
                        woken = clock.woken_while_running
                if woken is not None and woken <= utcnow() and not clock.closed:
                    continue  # a commit woke us mid-run: its rows may have missed this run's claim
                for at in (woken, upcoming):
                    if at is not None:
                        clock.wake(at)  # a wake-up that fell while we ran is not lost
                return

        scheduler.add_job(
            dispatch, "interval", seconds=dispatch_every_seconds, id="dispatch", next_run_time=utcnow(), **every
        )
        if supervise is not None:
            scheduler.add_job(
                _guard("controllers gone silent", supervise), "interval", seconds=30, id="supervise", **every
            )
        if reconcile is not None:
            scheduler.add_job(
                _guard("reconcile", reconcile), "interval", seconds=reconcile_every_seconds, id="reconcile", **every
            )
    now = utcnow
    scheduler.add_job(
        _guard("expired pending requests", lambda: expire_pending(engine, now())),
        "interval",
        seconds=expiry_every_seconds,
        id="expire-pending",
        next_run_time=now(),
        **every,
    )
    scheduler.add_job(
        _guard("no-shows marked", lambda: mark_no_shows(engine, now())),
        "interval",
        seconds=expiry_every_seconds,
        id="no-shows",
        next_run_time=now(),
        **every,
    )
    scheduler.add_job(
        _guard("bookings completed", lambda: complete_finished(engine, now())),
        "interval",
        seconds=expiry_every_seconds,
        id="complete-bookings",
        **every,
    )

    # visitors (schedules.visits): automatic check-out and no-shows with the sweeps, retention daily
    scheduler.add_job(
        _guard("visitors checked out", lambda: visit_jobs.auto_check_out(engine, now())),
        "interval",
        seconds=expiry_every_seconds,
        id="visits-check-out",
        next_run_time=now(),
        **every,
    )
    scheduler.add_job(
        _guard("visit no-shows", lambda: visit_jobs.no_shows(engine, now())),
        "interval",
        seconds=expiry_every_seconds,
        id="visits-no-show",
        **every,
    )
    scheduler.add_job(
        _guard("visitors purged", lambda: visit_jobs.purge(engine, now())),
        "interval",
        hours=6,
        id="visits-purge",
        **every,
    )

    def trim() -> None:
        with write_session(engine) as s:
            trim_changes(s, now())

    scheduler.add_job(_guard("access change log trimmed", trim), "interval", minutes=30, id="trim-changes", **every)
    scheduler.add_job(
        _guard("access levels re-planned", lambda: replan_levels(engine, now())),
        "interval",
        minutes=LEVELS_EVERY_MINUTES,
        id="access-levels",  # first run one interval after start: imports and the demo sync levels themselves
        **every,
    )
    scheduler.start()
    if listen:
        clock.listen()
    return clock
