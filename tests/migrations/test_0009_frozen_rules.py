"""Migration 0009 carries its own copy of the rules it applies (audit chain, credential seal and
lookup token). A database holding credentials and audit rows from before 0009 comes out of it
exactly as the application of today reads and writes them, and goes back again."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from bookgate import migrate
from config import get_settings
from core import audit
from core.audit import GENESIS, AuditEntry
from core.db import make_engine

PIN, BLE, QR, BADGE = "482913", "c0ffee00deadbeefc0ffee00deadbeef", "qr-6f1d2b", "04a1b2c3d4"
MIGRATION = Path(__file__).parents[2] / "migrations" / "versions" / "0009_keyed_audit_sealed_credentials.py"


@pytest.fixture
def keys(monkeypatch):
    """The key material the migration and the application both read from the settings."""
    monkeypatch.setenv("BOOKGATE_SECRET_KEY", "secret-for-the-0009-test")
    monkeypatch.setenv("BOOKGATE_CREDENTIAL_KEY", "credential-key-for-the-0009-test")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _seed_0008(conn: sa.Connection) -> dict[str, int]:
    meta = sa.MetaData()
    user = sa.Table("app_user", meta, autoload_with=conn)
    cred = sa.Table("credential", meta, autoload_with=conn)
    log = sa.Table("audit_log", meta, autoload_with=conn)
    now = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
    user_id = conn.execute(
        sa.insert(user).values(email="ana@example.org", name="Ana", locale="en", is_active=True, created_at=now)
    ).inserted_primary_key[0]
    ids = {}
    for kind, fmt, value in (("pin", "", PIN), ("ble", "", BLE), ("qr", "", QR), ("badge", "uid", BADGE)):
        ids[kind] = conn.execute(
            sa.insert(cred).values(user_id=user_id, kind=kind, format=fmt, value=value, label=kind, created_at=now)
        ).inserted_primary_key[0]
    # three audit rows chained by the rule of the time: bare SHA-256
    prev = GENESIS
    for i in range(3):
        entry = AuditEntry(
            at=now.replace(second=i),
            actor_id=user_id if i else None,
            actor="ana@example.org" if i else "system",
            action="credential.create",
            object_type="credential",
            object_id=str(i + 1),
            client_addr="192.0.2.7" if i == 2 else None,
            summary=audit._canonical({"after": {"n": i, "name": "Zoé"}}),
            prev_hash=prev,
            hash="",
        )
        entry.hash = audit.legacy_digest(prev, entry)
        conn.execute(sa.insert(log).values(**entry.model_dump(exclude={"id", "mac", "seq"})))
        prev = entry.hash
    return ids


def _credentials(engine: sa.Engine) -> dict[int, sa.Row]:
    with engine.connect() as conn:
        cred = sa.Table("credential", sa.MetaData(), autoload_with=conn)
        return {row.id: row for row in conn.execute(sa.select(cred)).all()}


def test_0009_result_equals_what_the_application_computes_today(fresh_db, keys):
    from access.models import lookup_token, unseal

    engine = make_engine(fresh_db.url)
    try:
        migrate.upgrade(engine, "0008")
        with engine.begin() as conn:
            ids = _seed_0008(conn)
        migrate.upgrade(engine, "0009")

        rows = _credentials(engine)
        for kind, plain in (("pin", PIN), ("ble", BLE), ("qr", QR)):
            row = rows[ids[kind]]
            assert row.value == lookup_token(kind, plain) and row.value != plain
            assert unseal(row.secret) == plain
        badge = rows[ids["badge"]]
        assert badge.value == BADGE and badge.secret is None
        migrate.upgrade(engine, "0014")  # today's table (0014 keeps the hashes, adds the chain order)
        with Session(engine) as s:
            result = audit.verify(s)  # today's keyed rule, today's key
        assert result.ok and result.checked == 3

        # and back: plaintext values and the bare SHA-256 chain, row for row
        migrate.downgrade(engine, "0008")
        rows = _credentials(engine)
        assert {rows[ids[k]].value for k in ("pin", "ble", "qr", "badge")} == {PIN, BLE, QR, BADGE}
        with Session(engine) as s:
            columns = [c for name, c in AuditEntry.__table__.c.items() if name not in ("mac", "seq")]  # type: ignore[attr-defined]
            entries = list(s.execute(audit.select(*columns).order_by(AuditEntry.id)).all())  # type: ignore[arg-type]
        prev = GENESIS
        for e in entries:
            assert e.prev_hash == prev and e.hash == audit.legacy_digest(prev, e)
            prev = e.hash
    finally:
        engine.dispose()


def test_0009_refuses_to_rekey_a_broken_chain(fresh_db, keys):
    engine = make_engine(fresh_db.url)
    try:
        migrate.upgrade(engine, "0008")
        with engine.begin() as conn:
            _seed_0008(conn)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
            else:
                conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT MIN(id) FROM audit_log)")
        with pytest.raises(RuntimeError, match="already broken"):
            migrate.upgrade(engine, "0009")
        assert migrate.current_revision(engine) == "0008"
    finally:
        engine.dispose()


def test_0009_imports_no_application_module_but_the_settings():
    tree = ast.parse(MIGRATION.read_text())
    ours = {"access", "bms", "core", "vms", "moderation", "bookgate", "migrations", "portal", "schedules"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    assert not imported & ours, imported & ours
    assert "config" in imported
