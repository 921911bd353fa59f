"""Unchained appends: writers never wait for each other on the audit trail, and migration 0014
keeps an existing chain and gives it back, in id order, on the way down."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlmodel import select

from bookgate import migrate
from core import audit
from core.audit import SYSTEM, AuditEntry
from core.db import make_engine, read_session, write_session


def test_two_writers_append_without_waiting_for_each_other(engine):
    """Before 0014, the second append waited for the first transaction's end (PostgreSQL's chain
    lock) or, on SQLite, could not even begin; now on PostgreSQL it commits while the first is open."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time by design")
    first_open = threading.Event()
    release = threading.Event()

    def slow() -> None:
        with write_session(engine) as s:
            audit.record(s, SYSTEM, "test.slow", "thing", 1)
            first_open.set()
            release.wait(10)

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert first_open.wait(10)
        done = threading.Event()

        def fast() -> None:
            with write_session(engine) as s:
                audit.record(s, SYSTEM, "test.fast", "thing", 2)
            done.set()

        other = threading.Thread(target=fast)
        other.start()
        assert done.wait(5), "the second append waited for the first transaction"
        other.join()
        assert audit.seal(engine) == 1  # the committed row only
    finally:
        release.set()
        t.join()
    assert audit.seal(engine) == 1
    with read_session(engine) as s:
        assert audit.verify(s).ok
        order = [r.action for r in s.exec(select(AuditEntry).order_by(AuditEntry.seq)).all()]
    assert order == ["test.fast", "test.slow"]  # commit order, not id order


def _chained_rows(conn, n: int) -> None:  # type: ignore[no-untyped-def]
    """Rows as the release before 0014 wrote them: chained in id order with the keyed rule."""
    prev = audit.GENESIS
    key = audit.chain_key()
    for i in range(n):
        e = AuditEntry(actor="system", action="old.thing", object_type="thing", object_id=str(i), summary="{}")
        e.prev_hash, e.hash = prev, audit.keyed_digest(prev, e, key)
        conn.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, object_type, object_id, summary, prev_hash, hash) "
                "VALUES (:at, :actor, :action, :ot, :oi, :summary, :p, :h)"
            ),
            {
                "at": e.at if conn.dialect.name == "postgresql" else e.at.replace(tzinfo=None),
                "actor": e.actor,
                "action": e.action,
                "ot": e.object_type,
                "oi": e.object_id,
                "summary": e.summary,
                "p": e.prev_hash,
                "h": e.hash,
            },
        )
        prev = e.hash


def test_0014_keeps_the_chain_and_gives_it_back_in_id_order(fresh_db):
    eng = make_engine(fresh_db.url)
    try:
        migrate.upgrade(eng, "0013")
        with eng.begin() as conn:
            _chained_rows(conn, 3)
        migrate.upgrade(eng, "0014")
        with read_session(eng) as s:
            rows = s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
            assert [r.seq for r in rows] == [1, 2, 3]
            assert audit.verify(s).checked == 3
        # appended and sealed after the upgrade (out of id order), then migrated down
        with write_session(eng) as s:
            audit.record(s, SYSTEM, "new.thing", "thing", 9)
        assert audit.seal(eng) == 1
        migrate.downgrade(eng, "0013")
        with eng.connect() as conn:
            got = conn.execute(text("SELECT id, prev_hash, hash FROM audit_log ORDER BY id")).all()
            prev = audit.GENESIS
            for _id, p, _h in got:
                assert p == prev
                prev = _h
            assert len(got) == 4
            # the strict guard is back
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text("UPDATE audit_log SET actor = 'x'"))
    finally:
        eng.dispose()
