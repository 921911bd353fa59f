"""audit: rows appended unchained in their transaction and linked in commit order by one sealer

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 19:10:00

Two columns: `mac` (a keyed MAC of the row's content, written with the row) and `seq` (its place
in the chain, written by the sealer with `prev_hash` and `hash`). Rows already chained keep their
hashes and take their place in id order, the order they were chained in. The append-only guard
now lets exactly one UPDATE through: the sealer filling the chain columns of a row not linked yet,
nothing else changed.

The downgrade verifies the trail (links in chain order, MACs of unlinked rows; a broken trail
stops it) and re-chains every row in id order, as the previous release walks it, with its own
frozen copy of the chain rule; only the key comes from the settings, as it must.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from config import get_settings

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_audit = sa.table(
    "audit_log",
    sa.column("id", sa.Integer),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor_id", sa.Integer),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("object_type", sa.String),
    sa.column("object_id", sa.String),
    sa.column("client_addr", sa.String),
    sa.column("summary", sa.Text),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
    sa.column("mac", sa.String),
    sa.column("seq", sa.Integer),
)

# The one update allowed: the chain columns of an unlinked row filled, its content unchanged.
_SEAL_ONLY = (
    "OLD.seq IS NULL AND NEW.seq IS NOT NULL AND OLD.prev_hash = '' AND OLD.hash = '' "
    "AND NEW.prev_hash <> '' AND NEW.hash <> '' AND NEW.id = OLD.id "
    "AND NEW.at IS NOT DISTINCT FROM OLD.at AND NEW.actor_id IS NOT DISTINCT FROM OLD.actor_id "
    "AND NEW.actor IS NOT DISTINCT FROM OLD.actor AND NEW.action IS NOT DISTINCT FROM OLD.action "
    "AND NEW.object_type IS NOT DISTINCT FROM OLD.object_type "
    "AND NEW.object_id IS NOT DISTINCT FROM OLD.object_id "
    "AND NEW.client_addr IS NOT DISTINCT FROM OLD.client_addr "
    "AND NEW.summary IS NOT DISTINCT FROM OLD.summary AND NEW.mac IS NOT DISTINCT FROM OLD.mac"
)

_PG_GUARD_SEALABLE = f"""
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND {_SEAL_ONLY} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
"""
_PG_GUARD_STRICT = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
"""
_SQLITE_UPDATE_SEALABLE = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    f"WHEN NOT ({_SEAL_ONLY.replace('IS NOT DISTINCT FROM', 'IS')}) "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
)
_SQLITE_UPDATE_STRICT = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
)
_SQLITE_DELETE = (
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
)


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _is_pg():
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    if _is_pg():
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
    # rows chained so far were chained in id order: that is their place
    op.execute(
        "UPDATE audit_log SET seq = r.n FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM audit_log) AS r "
        "WHERE audit_log.id = r.id"
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_seq"), ["seq"], unique=True)
    if _is_pg():
        op.execute(_PG_GUARD_SEALABLE)
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
    else:
        op.execute(_SQLITE_UPDATE_SEALABLE)


# ---------------------------------------------------------------- the chain rule, as of 0014

_GENESIS = "0" * 64
_CHAIN_LABEL = b"bookgate audit chain v1"


def _chain_key() -> bytes:
    return hmac.new(get_settings().effective_secret_key().encode(), _CHAIN_LABEL, hashlib.sha256).digest()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _material(prev_hash: str, row: Any) -> bytes:
    return "\x1f".join(
        [
            prev_hash,
            _utc(row.at).isoformat(),
            "" if row.actor_id is None else str(row.actor_id),
            row.actor,
            row.action,
            row.object_type,
            row.object_id,
            row.client_addr or "",
            row.summary,
        ]
    ).encode()


def _digest(prev_hash: str, row: Any, key: bytes) -> str:
    return hmac.new(key, _material(prev_hash, row), hashlib.sha256).hexdigest()


def _mac(row: Any, key: bytes) -> str:
    return hmac.new(key, b"row\x1f" + _material("", row), hashlib.sha256).hexdigest()


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_audit)).all()
    updates: list[tuple[int, str, str]] = []
    if rows:
        key = _chain_key()
        prev = _GENESIS
        for row in sorted((r for r in rows if r.seq is not None), key=lambda r: r.seq):
            if row.prev_hash != prev or _digest(prev, row, key) != row.hash:
                raise RuntimeError(f"audit chain broken at row {row.id}: refusing to re-chain it")
            prev = row.hash
        for row in rows:
            if row.seq is None and (row.mac is None or _mac(row, key) != row.mac):
                raise RuntimeError(f"audit row {row.id} does not match its MAC: refusing to chain it")
        prev = _GENESIS
        for row in sorted(rows, key=lambda r: r.id):
            digest = _digest(prev, row, key)
            if (row.prev_hash, row.hash) != (prev, digest):
                updates.append((row.id, prev, digest))
            prev = digest
    if _is_pg():
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for row_id, prev_hash, digest in updates:
        conn.execute(sa.update(_audit).where(_audit.c.id == row_id).values(prev_hash=prev_hash, hash=digest))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_seq"))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("seq")
        batch_op.drop_column("mac")
    if _is_pg():
        op.execute(_PG_GUARD_STRICT)
        op.execute(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        op.execute(_SQLITE_UPDATE_STRICT)
        op.execute(_SQLITE_DELETE)
