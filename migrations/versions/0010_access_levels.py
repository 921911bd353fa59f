"""access levels, windows on one door, QR codes sealed

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:45:00

An access window now targets a resource (its doors) or a single door: `door_id` is added and
`resource_id` may be null, exactly one of the two being set; `access_extra_door` keeps the
doors a manager added to a reservation. Access levels (a site's door set on
a weekly schedule), their doors and their holders get their tables.

QR credentials join PINs and BLE keys: `value` becomes a keyed HMAC and `secret` the value
encrypted. The keys are derived here as the application derives them (HKDF-SHA256 from the
credential key or the app's secret key), written out so this revision never depends on code
that may change later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import core.db
from config import get_settings

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_credential = sa.table(
    "credential",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("value", sa.String),
    sa.column("secret", sa.Text),
)


def _keys() -> tuple[Fernet, bytes]:
    settings = get_settings()
    material = (settings.credential_key or settings.effective_secret_key()).encode()

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)

    return Fernet(base64.urlsafe_b64encode(hkdf(b"bookgate credential encryption v1"))), hkdf(
        b"bookgate credential lookup v1"
    )


def upgrade() -> None:
    with op.batch_alter_table("access_window", schema=None) as batch_op:
        batch_op.add_column(sa.Column("door_id", sa.Integer(), nullable=True))
        batch_op.alter_column("resource_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key("fk_access_window_door_id", "door", ["door_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_access_window_door_end", ["door_id", "end"], unique=False)
        batch_op.create_check_constraint("ck_access_window_one_target", "(resource_id IS NULL) <> (door_id IS NULL)")

    op.create_table(
        "access_level",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("schedule", core.db.JSONText(), nullable=False),
        sa.Column("exceptions", core.db.JSONText(), nullable=False),
        sa.Column("roles", core.db.JSONText(), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "key", name="uq_access_level_site_key"),
    )
    with op.batch_alter_table("access_level", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_level_site_id"), ["site_id"], unique=False)

    op.create_table(
        "access_level_door",
        sa.Column("level_id", sa.Integer(), nullable=False),
        sa.Column("door_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["door_id"], ["door.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["level_id"], ["access_level.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("level_id", "door_id"),
    )
    with op.batch_alter_table("access_level_door", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_level_door_door_id"), ["door_id"], unique=False)

    op.create_table(
        "access_level_holder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=10), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["level_id"], ["access_level.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("level_id", "user_id", name="uq_access_level_holder"),
    )
    with op.batch_alter_table("access_level_holder", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_level_holder_level_id"), ["level_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_level_holder_user_id"), ["user_id"], unique=False)

    op.create_table(
        "access_extra_door",
        sa.Column("source_type", sa.String(length=20), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("door_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["door_id"], ["door.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("source_type", "source_id", "door_id"),
    )

    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_credential.c.id, _credential.c.value).where(
            _credential.c.kind == "qr", _credential.c.secret.is_(None)
        )
    ).all()
    if rows:
        fernet, lookup = _keys()
        for row_id, value in rows:
            token = "h1:" + hmac.new(lookup, f"qr\x1f{value}".encode(), hashlib.sha256).hexdigest()
            conn.execute(
                sa.update(_credential)
                .where(_credential.c.id == row_id)
                .values(value=token, secret=fernet.encrypt(value.encode()).decode())
            )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_credential.c.id, _credential.c.secret).where(
            _credential.c.kind == "qr", _credential.c.secret.is_not(None)
        )
    ).all()
    if rows:
        fernet, _lookup = _keys()
        for row_id, secret in rows:
            conn.execute(
                sa.update(_credential)
                .where(_credential.c.id == row_id)
                .values(value=fernet.decrypt(secret.encode()).decode(), secret=None)
            )
    op.drop_table("access_extra_door")
    op.drop_table("access_level_holder")
    op.drop_table("access_level_door")
    op.drop_table("access_level")
    # windows on a single door cannot be expressed before this revision
    op.execute("DELETE FROM access_window WHERE door_id IS NOT NULL")
    with op.batch_alter_table("access_window", schema=None) as batch_op:
        batch_op.drop_constraint("ck_access_window_one_target", type_="check")
        batch_op.drop_index("ix_access_window_door_end")
        batch_op.drop_constraint("fk_access_window_door_id", type_="foreignkey")
        batch_op.alter_column("resource_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("door_id")
