"""The keyed chain and its signed checkpoint: rewriting and truncation are named apart."""

from __future__ import annotations

import hashlib
import os
import stat

from sqlalchemy import text

from bookgate.cli import main as cli_main
from config import Settings
from core import audit
from core.audit import SYSTEM, AuditEntry
from core.db import is_sqlite, make_engine, read_session, write_session

SECRET = "test-secret-for-the-audit-chain"


def _rows(engine, n):
    with write_session(engine) as s:
        for i in range(n):
            audit.record(s, SYSTEM, "test.thing", "thing", i, after={"n": i})


def _raw(engine, sql, **params):
    """What someone holding the database can do: drop the guards and write."""
    with engine.begin() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute(text(sql), params)
        if not is_sqlite(engine):  # the PostgreSQL database outlives this test: guard it again
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER USER")


def test_a_recomputed_bare_sha256_tail_does_not_verify(engine):
    _rows(engine, 4)
    with read_session(engine) as s:
        rows = list(s.exec(audit.select(AuditEntry).order_by(AuditEntry.id)).all())  # type: ignore[arg-type]
    # edit row 2 and recompute every later hash with the old, keyless rule
    prev = rows[0].hash
    forged = []
    for row in rows[1:]:
        if row.id == rows[1].id:
            row.summary = '{"after":{"n":99}}'
        row.prev_hash = prev
        row.hash = hashlib.sha256(audit._material(prev, row)).hexdigest()
        forged.append((row.id, row.summary, row.prev_hash, row.hash))
        prev = row.hash
    for row_id, summary, prev_hash, h in forged:
        _raw(
            engine,
            "UPDATE audit_log SET summary=:s, prev_hash=:p, hash=:h WHERE id=:i",
            s=summary,
            p=prev_hash,
            h=h,
            i=row_id,
        )
    with read_session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.problem == "rewritten" and result.first_bad_id == rows[1].id


def test_truncation_is_caught_by_the_checkpoint(engine, tmp_path):
    _rows(engine, 5)
    path = tmp_path / "audit-checkpoint"
    with read_session(engine) as s:
        first = audit.verify(s)
    assert first.ok and first.head is not None and first.head.rows == 5
    audit.write_checkpoint(path, first.head)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cp = audit.read_checkpoint(path)
    assert cp == first.head
    _raw(engine, "DELETE FROM audit_log WHERE id > :i", i=first.head.last_id - 2)
    with read_session(engine) as s:
        assert audit.verify(s).ok  # the chain alone cannot tell
        cut = audit.verify(s, checkpoint=cp)
    assert not cut.ok and cut.problem == "truncated" and cut.checked == 3
    # appending after the cut does not hide it
    _rows(engine, 3)
    with read_session(engine) as s:
        assert audit.verify(s, checkpoint=cp).problem in ("truncated", "rewritten")


def test_checkpoint_signature_is_checked(engine, tmp_path):
    path = tmp_path / "cp"
    audit.write_checkpoint(path, audit.Checkpoint(10, 10, "ab" * 32))
    path.write_text(path.read_text().replace('"rows": 10', '"rows": 2'))
    try:
        audit.read_checkpoint(path)
    except audit.CheckpointError:
        pass
    else:
        raise AssertionError("a forged checkpoint was accepted")


def test_cli_names_truncation_and_rewriting_apart(engine, tmp_path, monkeypatch, capsys):
    from config import get_settings

    var = tmp_path / "var"
    monkeypatch.setenv("BOOKGATE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BOOKGATE_VAR_DIR", str(var))
    get_settings.cache_clear()
    try:
        _rows(engine, 4)
        assert cli_main(["audit", "verify"]) == 0
        assert (var / audit.CHECKPOINT_FILE).exists()
        _raw(engine, "DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
        assert cli_main(["audit", "verify"]) == 1
        assert "truncated" in capsys.readouterr().err
        _raw(engine, "UPDATE audit_log SET actor='mallory' WHERE id = (SELECT MIN(id) FROM audit_log)")
        assert cli_main(["audit", "verify"]) == 1
        err = capsys.readouterr().err
        assert "rewritten" in err and "truncated" not in err
    finally:
        get_settings.cache_clear()


def test_var_dir_and_sqlite_file_are_private(tmp_path):
    previous = os.umask(0o022)  # the usual default: files would come out 0644 unless made private
    try:
        _check_private(tmp_path)
    finally:
        os.umask(previous)


def _check_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(var_dir=tmp_path / "v" / "var", _env_file=None)  # type: ignore[call-arg]
    var = settings.ensure_var_dir()
    assert stat.S_IMODE(os.stat(var).st_mode) == 0o700
    engine = make_engine(settings.effective_database_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x int)")
    engine.dispose()
    assert stat.S_IMODE(os.stat(var / "core.db").st_mode) == 0o600
    # an existing world-readable file and dir are tightened
    os.chmod(var / "core.db", 0o644)
    os.chmod(var, 0o755)  # noqa: S103 -- the old, loose mode being tightened
    settings.ensure_var_dir()
    make_engine(settings.effective_database_url).dispose()
    assert stat.S_IMODE(os.stat(var).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(var / "core.db").st_mode) == 0o600
