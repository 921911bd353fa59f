"""Transaction hooks (`core.db.listen`): parts that follow commits register while other threads
commit, which SQLAlchemy's own event registry does not allow."""

from __future__ import annotations

import threading

from sqlalchemy import text

from core import db
from core.db import make_engine, write_session


def test_hooks_come_and_go_while_other_threads_commit(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hooks.db'}")
    with write_session(engine) as s:
        s.connection().execute(text("CREATE TABLE t (n INTEGER)"))
    stop = threading.Event()
    errors: list[BaseException] = []
    commits = [0]

    def commit_forever() -> None:
        while not stop.is_set():
            try:
                with write_session(engine) as s:
                    s.connection().execute(text("INSERT INTO t (n) VALUES (1)"))
                commits[0] += 1
            except BaseException as exc:  # what the race raised out of a commit
                errors.append(exc)
                return

    threads = [threading.Thread(target=commit_forever) for _ in range(2)]
    for t in threads:
        t.start()
    seen: list[int] = []
    try:
        for i in range(2000):
            fn = seen.append if i % 2 else (lambda _conn, i=i: seen.append(i))
            db.listen(engine, "commit", fn)
            db.unlisten(engine, "commit", fn)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        engine.dispose()
    assert errors == [] and commits[0] > 0


def test_a_hook_runs_in_order_once_and_stops_when_removed(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'order.db'}")
    calls: list[str] = []

    def first(_conn) -> None:  # type: ignore[no-untyped-def]
        calls.append("first")

    def second(_conn) -> None:  # type: ignore[no-untyped-def]
        calls.append("second")

    db.listen(engine, "commit", first)
    db.listen(engine, "commit", second)
    db.listen(engine, "commit", first)  # again: no-op
    with write_session(engine) as s:
        s.connection().execute(text("SELECT 1"))
    assert calls == ["first", "second"]
    db.unlisten(engine, "commit", first)
    assert not db.listening(engine, "commit", first) and db.listening(engine, "commit", second)
    with write_session(engine) as s:
        s.connection().execute(text("SELECT 1"))
    assert calls == ["first", "second", "second"]
    engine.dispose()
