"""credentials, access windows, transitions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:23:58.858441
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("valid_from", core.db.UTCDateTime(), nullable=True),
        sa.Column("valid_until", core.db.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "value"),
    )
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credential_user_id"), ["user_id"], unique=False)

    op.create_table(
        "access_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(length=20), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("start", core.db.UTCDateTime(), nullable=False),
        sa.Column("end", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_window", schema=None) as batch_op:
        batch_op.create_index("ix_access_window_resource_end", ["resource_id", "end"], unique=False)
        batch_op.create_index("ix_access_window_source", ["source_type", "source_id"], unique=False)

    op.create_table(
        "transition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("controller_id", sa.Integer(), nullable=False),
        sa.Column("door_id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("due_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=40), nullable=True),
        sa.Column("claimed_until", core.db.UTCDateTime(), nullable=True),
        sa.Column("done_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["controller_id"], ["controller.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["credential_id"], ["credential.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["door_id"], ["door.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("transition", schema=None) as batch_op:
        batch_op.create_index("ix_transition_due", ["status", "due_at"], unique=False)
        batch_op.create_index("ix_transition_source", ["source"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transition", schema=None) as batch_op:
        batch_op.drop_index("ix_transition_source")
        batch_op.drop_index("ix_transition_due")

    op.drop_table("transition")
    with op.batch_alter_table("access_window", schema=None) as batch_op:
        batch_op.drop_index("ix_access_window_source")
        batch_op.drop_index("ix_access_window_resource_end")

    op.drop_table("access_window")
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credential_user_id"))

    op.drop_table("credential")
