"""The clock hears only its own engine's commits: two apps in one process never wake each other,
and a stopped clock stops listening."""

from __future__ import annotations

from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from access.transitions import NEXT_DUE
from core import db
from core.db import make_engine, utcnow, write_session
from schedules.clock import Clock


class Recording(Clock):
    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        super().__init__(engine, BackgroundScheduler(timezone="UTC"), dispatching=True)
        self.woken: list = []

    def wake(self, at) -> None:  # type: ignore[no-untyped-def]
        self.woken.append(at)


def _commit_noting(engine, due) -> None:  # type: ignore[no-untyped-def]
    with write_session(engine) as s:
        s.exec(text("SELECT 1"))  # type: ignore[call-overload]
        s.connection().info[NEXT_DUE] = due


def test_a_clock_wakes_for_its_own_engine_only(tmp_path):
    ours, theirs = (make_engine(f"sqlite:///{tmp_path / name}.db") for name in ("ours", "theirs"))
    clock = Recording(ours)
    clock.listen()
    soon = utcnow() + timedelta(seconds=5)
    try:
        _commit_noting(theirs, soon)
        assert clock.woken == []
        _commit_noting(ours, soon)
        assert clock.woken == [soon]
        with write_session(ours) as s:  # a rollback forgets what the transaction noted
            s.connection().info[NEXT_DUE] = soon
            s.rollback()
        _commit_noting(ours, None)
        assert clock.woken == [soon]
    finally:
        for name, fn in (("commit", clock._on_commit), ("rollback", clock._on_rollback)):
            db.unlisten(ours, name, fn)
        ours.dispose()
        theirs.dispose()


def test_a_stopped_clock_stops_listening(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'e'}.db")
    clock = Recording(engine)
    clock.scheduler.start()
    clock.listen()
    clock.shutdown(wait=True)
    assert not db.listening(engine, "commit", clock._on_commit)
    _commit_noting(engine, utcnow())
    assert clock.woken == []
    engine.dispose()
