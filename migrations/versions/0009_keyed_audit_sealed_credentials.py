"""keyed audit chain, PINs and BLE keys encrypted at rest

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

Audit: rows were chained with a bare SHA-256, which anyone able to write the table could
recompute. The existing chain is verified by that rule and, only if intact, re-keyed with
HMAC-SHA256 under a key derived from the app's secret key (`core.audit.chain_key`); a chain
that is already broken stops the migration, so a forgery is never laundered into a valid one.

Credentials: PINs and BLE keys move into `secret`, encrypted (`access.models.seal`), and
`value` keeps a keyed HMAC of them for uniqueness and lookups (`access.models.lookup_token`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel import Session, col, select

from access.models import SEALED_KINDS, lookup_token, seal, unseal
from core.audit import GENESIS, AuditEntry, chain_key, keyed_digest, legacy_digest

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
    "audit_log", sa.column("id", sa.Integer), sa.column("prev_hash", sa.String), sa.column("hash", sa.String)
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


def _rechain(to_keyed: bool) -> None:
    """Verify the chain by its current rule and rewrite every hash by the other one."""
    conn = op.get_bind()
    key = chain_key()

    def keyed(prev: str, row: AuditEntry) -> str:
        return keyed_digest(prev, row, key)

    old_rule, new_rule = (legacy_digest, keyed) if to_keyed else (keyed, legacy_digest)
    session = Session(bind=conn)
    rows = list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())
    prev_old, prev_new = GENESIS, GENESIS
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
    session.expunge_all()
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
            _credential.c.kind.in_(sorted(SEALED_KINDS))
        )
    ).all()
    for row_id, kind, value in rows:
        conn.execute(
            sa.update(_credential)
            .where(_credential.c.id == row_id)
            .values(value=lookup_token(kind, value), secret=seal(value))
        )
    _rechain(to_keyed=True)


def downgrade() -> None:
    conn = op.get_bind()
    _rechain(to_keyed=False)
    rows = conn.execute(
        sa.select(_credential.c.id, _credential.c.secret).where(_credential.c.secret.is_not(None))
    ).all()
    for row_id, secret in rows:
        conn.execute(sa.update(_credential).where(_credential.c.id == row_id).values(value=unseal(secret)))
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_column("secret")
