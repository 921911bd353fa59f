"""keyed audit chain, PINs and BLE keys encrypted at rest

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

Audit: rows were chained with a bare SHA-256, which anyone able to write the table could
recompute. The existing chain is verified by that rule and, only if intact, re-keyed with
HMAC-SHA256 under a key derived from the app's secret key; a chain that is already broken stops
the migration, so a forgery is never laundered into a valid one.

Credentials: PINs, BLE keys and QR codes move into `secret`, encrypted (Fernet), and `value`
keeps a keyed HMAC of them for uniqueness and lookups.

This revision carries its own copy of every rule it applies (the chain's material and digests,
the credential key derivation, the seal and the lookup token), frozen as they were when it was
written: later changes to `core.audit` or `access.models` cannot change what it does to a
database. Only the key material comes from the settings (`BOOKGATE_SECRET_KEY`,
`BOOKGATE_CREDENTIAL_KEY`), as it must. `tests/migrations/test_0009_frozen_rules.py` checks that
the result still equals what the application computes today.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from config import get_settings

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_credential = sa.table(
    "credential",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("value", sa.String),
    sa.column("secret", sa.Text),
)
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
)

_PG_GUARD = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""
_SQLITE_GUARDS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)

# ---------------------------------------------------------------- the audit chain, as of 0009

_GENESIS = "0" * 64
_CHAIN_LABEL = b"bookgate audit chain v1"


def _chain_key() -> bytes:
    return hmac.new(get_settings().effective_secret_key().encode(), _CHAIN_LABEL, hashlib.sha256).digest()


def _utc(value: datetime) -> datetime:
    """A stored time as the application reads it: aware, in UTC (SQLite keeps it naive)."""
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


def _legacy_digest(prev_hash: str, row: Any) -> str:
    return hashlib.sha256(_material(prev_hash, row)).hexdigest()


def _keyed_digest(prev_hash: str, row: Any, key: bytes) -> str:
    return hmac.new(key, _material(prev_hash, row), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- credentials at rest, as of 0009

_SEALED_KINDS = ("ble", "pin", "qr")
_LOOKUP_PREFIX = "h1:"


def _credential_keys() -> tuple[Fernet, bytes]:
    settings = get_settings()
    material = (settings.credential_key or settings.effective_secret_key()).encode()

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)

    fernet = Fernet(base64.urlsafe_b64encode(hkdf(b"bookgate credential encryption v1")))
    return fernet, hkdf(b"bookgate credential lookup v1")


def _lookup_token(lookup_key: bytes, kind: str, value: str) -> str:
    return _LOOKUP_PREFIX + hmac.new(lookup_key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- steps


def _rechain(to_keyed: bool) -> None:
    """Verify the chain by its current rule and rewrite every hash by the other one."""
    conn = op.get_bind()
    key = _chain_key()

    def keyed(prev: str, row: Any) -> str:
        return _keyed_digest(prev, row, key)

    old_rule, new_rule = (_legacy_digest, keyed) if to_keyed else (keyed, _legacy_digest)
    rows = conn.execute(sa.select(_audit).order_by(_audit.c.id)).all()
    prev_old, prev_new = _GENESIS, _GENESIS
    updates = []
    for row in rows:
        if row.prev_hash != prev_old or old_rule(prev_old, row) != row.hash:
            raise RuntimeError(
                f"audit chain already broken at row {row.id}: refusing to re-key it "
                "(investigate with the previous release's `bookgate audit verify`)"
            )
        prev_old = row.hash
        new_hash = new_rule(prev_new, row)
        updates.append((row.id, prev_new, new_hash))
        prev_new = new_hash
    if not updates:
        return
    if conn.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for row_id, prev_hash, new_hash in updates:
        conn.execute(sa.update(_audit).where(_audit.c.id == row_id).values(prev_hash=prev_hash, hash=new_hash))
    if conn.dialect.name == "postgresql":
        op.execute(_PG_GUARD)
    else:
        for stmt in _SQLITE_GUARDS:
            op.execute(stmt)


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.add_column(sa.Column("secret", sa.Text(), nullable=True))
    rows = conn.execute(
        sa.select(_credential.c.id, _credential.c.kind, _credential.c.value).where(
            _credential.c.kind.in_(_SEALED_KINDS)
        )
    ).all()
    if rows:
        fernet, lookup_key = _credential_keys()
        for row_id, kind, value in rows:
            conn.execute(
                sa.update(_credential)
                .where(_credential.c.id == row_id)
                .values(value=_lookup_token(lookup_key, kind, value), secret=fernet.encrypt(value.encode()).decode())
            )
    _rechain(to_keyed=True)


def downgrade() -> None:
    conn = op.get_bind()
    _rechain(to_keyed=False)
    rows = conn.execute(
        sa.select(_credential.c.id, _credential.c.secret).where(_credential.c.secret.is_not(None))
    ).all()
    if rows:
        fernet, _ = _credential_keys()
        for row_id, secret in rows:
            conn.execute(
                sa.update(_credential)
                .where(_credential.c.id == row_id)
                .values(value=fernet.decrypt(secret.encode()).decode())
            )
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_column("secret")
