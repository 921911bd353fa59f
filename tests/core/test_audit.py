from __future__ import annotations

from itertools import pairwise

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from bookgate.cli import main as cli_main
from core import audit
from core.audit import SYSTEM, Actor, AuditEntry
from core.db import read_session, write_session


def _write(engine, n: int) -> None:
    for i in range(n):
        with write_session(engine) as s:
            audit.record(
                s,
                Actor(7, "someone@example.com", "10.0.0.1"),
                "thing.update",
                "thing",
                i,
                before={"v": i},
                after={"v": i + 1},
            )


def test_chain_verifies(engine):
    _write(engine, 5)
    with read_session(engine) as s:
        result = audit.verify(s)
        rows = s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert result.ok and result.checked == 5
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(rows))
    assert rows[0].at.tzinfo is not None


def test_database_refuses_update_and_delete(engine):
    _write(engine, 2)
    for stmt in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), write_session(engine) as s:
            s.execute(text(stmt))
    with read_session(engine) as s:
        assert audit.verify(s).checked == 2


def _disable_guards(engine) -> None:
    """What an attacker with DDL rights would do before tampering."""
    with write_session(engine) as s:
        if engine.dialect.name == "postgresql":
            s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
        else:
            s.execute(text("DROP TRIGGER audit_log_no_update"))
            s.execute(text("DROP TRIGGER audit_log_no_delete"))


def test_tampered_row_is_named(engine, tmp_path, monkeypatch, capsys):
    _write(engine, 6)
    _disable_guards(engine)
    with write_session(engine) as s:
        third = s.exec(select(AuditEntry).order_by(AuditEntry.id).offset(2)).first()
        s.execute(
            text("UPDATE audit_log SET summary = :v WHERE id = :id"), {"v": '{"after":{"v":999}}', "id": third.id}
        )
    with read_session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.first_bad_id == third.id and result.checked == 2
    assert "content" in result.reason

    # The CLI says the same and fails.
    monkeypatch.setenv("BOOKGATE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    from config import get_settings

    # the rows' key, and a var/ of this test's own (no checkpoint of another database)
    monkeypatch.setenv("BOOKGATE_SECRET_KEY", get_settings().effective_secret_key())
    monkeypatch.setenv("BOOKGATE_VAR_DIR", str(tmp_path / "cli-var"))
    get_settings.cache_clear()
    try:
        assert cli_main(["audit", "verify"]) == 1
    finally:
        get_settings.cache_clear()
    assert f"broken at row {third.id}" in capsys.readouterr().err


def test_deleted_row_breaks_the_link(engine):
    _write(engine, 4)
    assert audit.seal(engine) == 4  # what the running server's keeper does right after the commits
    _disable_guards(engine)
    with write_session(engine) as s:
        second = s.exec(select(AuditEntry).order_by(AuditEntry.id).offset(1)).first()
        s.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": second.id})
    with read_session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.first_bad_id == second.id + 1 and "link" in result.reason


def test_audit_row_rolls_back_with_its_change(engine):
    with pytest.raises(RuntimeError), write_session(engine) as s:
        audit.record(s, SYSTEM, "thing.create", "thing", 1)
        raise RuntimeError("the change failed")
    with read_session(engine) as s:
        assert s.exec(select(AuditEntry)).all() == []


def test_rows_are_appended_unlinked_and_sealed_in_commit_order(engine):
    """A writer reads nothing and takes no lock: its row gets its place in the chain when the
    sealer links it, after rows that committed before it, whatever their ids."""
    with write_session(engine) as late:
        first = audit.record(late, SYSTEM, "thing.slow", "thing", 1)  # the lower id, committed last
        with write_session(engine) if engine.dialect.name == "postgresql" else _nothing() as early:
            if early is not None:
                second = audit.record(early, SYSTEM, "thing.fast", "thing", 2)
        if early is not None:
            assert audit.seal(engine) == 1  # the committed row only
    assert audit.seal(engine) == 1
    with read_session(engine) as s:
        rows = {r.id: r for r in s.exec(select(AuditEntry)).all()}
        assert audit.verify(s).ok
    assert rows[first.id].mac and rows[first.id].seq is not None
    if engine.dialect.name == "postgresql":
        assert rows[second.id].seq == 1 and rows[first.id].seq == 2
        assert rows[first.id].prev_hash == rows[second.id].hash


class _nothing:
    def __enter__(self):  # type: ignore[no-untyped-def]
        return None

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        return False


def test_the_guard_lets_only_the_seal_through(engine):
    if engine.dialect.name == "postgresql":  # the database outlives tests that disabled the guard
        with write_session(engine) as s:
            s.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    _write(engine, 2)
    with read_session(engine) as s:
        row = s.exec(select(AuditEntry).order_by(AuditEntry.id)).first()
    # an unlinked row: its content cannot change, even together with its chain columns
    for stmt in (
        "UPDATE audit_log SET summary = '{}', seq = 99, prev_hash = 'a', hash = 'b' WHERE id = :id",
        "UPDATE audit_log SET mac = 'forged' WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"), write_session(engine) as s:
            s.execute(text(stmt), {"id": row.id})
    assert audit.seal(engine) == 2
    # a linked row: not even its chain columns
    with pytest.raises(DBAPIError, match="append-only"), write_session(engine) as s:
        s.execute(text("UPDATE audit_log SET seq = 7, hash = 'c', prev_hash = 'd' WHERE id = :id"), {"id": row.id})
    with read_session(engine) as s:
        assert audit.verify(s).checked == 2


def test_an_unlinked_row_rewritten_is_not_sealed(engine):
    _write(engine, 3)
    _disable_guards(engine)
    with read_session(engine) as s:
        rows = s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
    with write_session(engine) as s:
        s.execute(text("UPDATE audit_log SET object_id = '42' WHERE id = :id"), {"id": rows[1].id})
    with pytest.raises(audit.ChainError) as bad:
        audit.seal(engine)
    assert bad.value.row_id == rows[1].id
    with read_session(engine) as s:
        linked = s.exec(select(AuditEntry.id).where(AuditEntry.seq.is_not(None))).all()  # type: ignore[union-attr]
        result = audit.verify(s)
    assert linked == [rows[0].id]
    assert not result.ok and result.first_bad_id == rows[1].id and result.checked == 1
