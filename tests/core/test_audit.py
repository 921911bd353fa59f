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
