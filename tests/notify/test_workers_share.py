"""Several nodes on one PostgreSQL: two worker processes share 1,000 messages through the
outbox's leases and SKIP LOCKED; the SMTP server receives each exactly once."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import pytest
from sqlmodel import col, select

from config import Settings
from core import outbox
from core.db import make_engine, read_session, write_session
from core.outbox import OutboxMessage
from notify.messages import EMAIL

N = 1000


def _node(url: str, var_dir: str, smtp_port: int, out: mp.Queue) -> None:
    from schedules.delivery import DeliveryWorker

    settings = Settings(var_dir=var_dir, scheduler=False, smtp_host="127.0.0.1", smtp_port=smtp_port, _env_file=None)  # type: ignore[call-arg]
    engine = make_engine(url)
    w = DeliveryWorker(engine, settings, reminders=False)
    handled, idle = 0, 0
    while idle < 3:  # three empty rounds in a row: the other node has the rest, or nothing is left
        n = w.run_once(f"node-{mp.current_process().pid}")
        handled += n
        idle = 0 if n else idle + 1
    w.stop()
    engine.dispose()
    out.put(handled)


def test_two_processes_share_a_thousand_messages(engine, backend, smtp, tmp_path):
    if backend != "postgresql":
        pytest.skip("several nodes share one PostgreSQL; SQLite is one node")
    with write_session(engine) as s:
        for i in range(N):
            outbox.enqueue(
                s,
                EMAIL,
                {
                    "to": f"p{i}@example.com",
                    "to_name": "",
                    "subject": f"message {i}",
                    "text": "hello",
                    "html": "<p>hello</p>",
                    "message_id": f"<share-{i}@bookgate>",
                },
            )
    ctx = mp.get_context("fork")  # like tests/core/test_outbox.py: the children start at once
    out: mp.Queue = ctx.Queue()
    url = engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_node, args=(url, str(tmp_path), smtp.port, out)) for _ in range(2)]
    for p in procs:
        p.start()
    handled = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    ids = Counter(str(m["Message-ID"]) for m in smtp.messages)
    assert len(ids) == N and set(ids.values()) == {1}  # none lost, none twice
    assert sum(handled) == N and min(handled) > 0  # both nodes took a share
    with read_session(engine) as s:
        rows = s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == EMAIL)).all()
    assert all(r.done_at is not None and r.attempts == 1 for r in rows)
