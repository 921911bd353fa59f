"""reservation changes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 11:07:20.231071
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reservation_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=False),
        sa.Column("start", core.db.UTCDateTime(), nullable=False),
        sa.Column("end", core.db.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("base_version", core.db.UTCDateTime(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("decided_at", core.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["requested_by"], ["app_user.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["reservation_id"], ["reservation.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reservation_change", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reservation_change_reservation_id"), ["reservation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reservation_change", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservation_change_reservation_id"))

    op.drop_table("reservation_change")
