from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import pytest
from sqlmodel import select

from core import outbox
from core.db import make_engine, read_session, write_session
from core.outbox import OutboxMessage


def test_message_exists_only_after_commit(engine):
    with write_session(engine) as s:
        outbox.enqueue(s, "mail", {"to": "a@example.com"})
        # Another connection sees nothing before the commit.
        with read_session(engine) as other:
            assert other.exec(select(OutboxMessage)).all() == []
    with read_session(engine) as s:
        rows = s.exec(select(OutboxMessage)).all()
    assert [r.payload for r in rows] == [{"to": "a@example.com"}]


def test_rolled_back_change_leaves_no_message(engine):
    with pytest.raises(ValueError), write_session(engine) as s:
        outbox.enqueue(s, "mail", {"to": "b@example.com"})
        raise ValueError("validation failed after enqueue")
    with read_session(engine) as s:
        assert s.exec(select(OutboxMessage)).all() == []


def test_drain_handles_each_once_and_retries_failures(engine):
    with write_session(engine) as s:
        for i in range(5):
            outbox.enqueue(s, "mail", {"n": i})
        outbox.enqueue(s, "webhook", {"n": 99})
    seen: list[int] = []

    def mail(msg: outbox.Claimed) -> None:
        if msg.payload["n"] == 3:
            raise ConnectionError("smtp down")
        seen.append(msg.payload["n"])

    assert outbox.drain(engine, {"mail": mail}) == 4
    assert sorted(seen) == [0, 1, 2, 4]
    assert outbox.drain(engine, {"mail": mail}) == 0  # n=3 waits for its backoff
    with read_session(engine) as s:
        rows = {r.payload["n"]: r for r in s.exec(select(OutboxMessage)).all()}
    assert rows[3].done_at is None and rows[3].attempts == 1 and "smtp down" in rows[3].last_error
    assert rows[3].available_at > rows[3].created_at
    assert rows[99].done_at is None and rows[99].attempts == 0  # no consumer claimed it


def _worker(url: str, out: mp.Queue) -> None:
    engine = make_engine(url)
    handled: list[int] = []
    outbox.drain(engine, {"job": lambda m: handled.append(m.payload["n"])}, limit=20)
    engine.dispose()
    out.put(handled)


def test_two_processes_share_the_work_without_doubles(engine):
    total = 600
    with write_session(engine) as s:
        for i in range(total):
            outbox.enqueue(s, "job", {"n": i})
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    url = engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_worker, args=(url, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    counts = Counter(n for r in results for n in r)
    assert len(counts) == total and max(counts.values()) == 1
    with read_session(engine) as s:
        assert all(r.done_at is not None for r in s.exec(select(OutboxMessage)).all())
