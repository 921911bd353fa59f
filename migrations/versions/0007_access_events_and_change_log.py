"""access events and change log

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 12:22:16.961429
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("controller", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mqtt_username", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("mqtt_secret", sa.String(length=255), nullable=True))
    op.create_table(
        "access_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "access_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("controller_id", sa.Integer(), nullable=False),
        sa.Column("door_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("presented", sa.String(length=128), nullable=True),
        sa.Column("credential_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=40), nullable=True),
        sa.Column("decided_by", sa.String(length=12), nullable=False),
        sa.Column("detail", core.db.JSONText(), nullable=False),
        sa.ForeignKeyConstraint(["controller_id"], ["controller.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["credential_id"], ["credential.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["door_id"], ["door.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_event_at"), ["at"], unique=False)
        batch_op.create_index("ix_access_event_door_at", ["door_id", "at"], unique=False)
        batch_op.create_index("ix_access_event_source", ["source"], unique=False)
        batch_op.create_index("ix_access_event_user_at", ["user_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_event", schema=None) as batch_op:
        batch_op.drop_index("ix_access_event_user_at")
        batch_op.drop_index("ix_access_event_source")
        batch_op.drop_index("ix_access_event_door_at")
        batch_op.drop_index(batch_op.f("ix_access_event_at"))

    op.drop_table("access_event")
    op.drop_table("access_change")
    with op.batch_alter_table("controller", schema=None) as batch_op:
        batch_op.drop_column("mqtt_secret")
        batch_op.drop_column("mqtt_username")
