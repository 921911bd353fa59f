"""reservations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:03:26.974455
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

# No double booking, enforced by PostgreSQL itself: two holding bookings of one exclusive unit
# may not share any instant of their buffer-widened ranges. (SQLite serialises writers instead.)
_EXCLUSION = """
ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist (
    unit_id WITH =,
    tstzrange(block_start, block_end, '[)') WITH &&
) WHERE (exclusive AND status IN ('confirmed', 'checked_in'))
"""


def _create_exclusion() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(_EXCLUSION)


def _drop_exclusion() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reservation DROP CONSTRAINT IF EXISTS reservation_no_overlap")


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", core.db.JSONText(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "key"),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("planner_id", sa.Integer(), nullable=False),
        sa.Column("rrule", sa.String(length=500), nullable=False),
        sa.Column("until_local", sa.String(length=19), nullable=True),
        sa.Column("dtstart_local", sa.String(length=19), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("places", sa.Integer(), nullable=False),
        sa.Column("beneficiary_ids", core.db.JSONText(), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["planner_id"], ["app_user.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_series_planner_id"), ["planner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_series_resource_id"), ["resource_id"], unique=False)

    op.create_table(
        "reservation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("planner_id", sa.Integer(), nullable=False),
        sa.Column("start", core.db.UTCDateTime(), nullable=False),
        sa.Column("end", core.db.UTCDateTime(), nullable=False),
        sa.Column("block_start", core.db.UTCDateTime(), nullable=False),
        sa.Column("block_end", core.db.UTCDateTime(), nullable=False),
        sa.Column("access_start", core.db.UTCDateTime(), nullable=False),
        sa.Column("access_end", core.db.UTCDateTime(), nullable=False),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("long_span", sa.Boolean(), nullable=False),
        sa.Column("places", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("occurrence_key", sa.String(length=19), nullable=True),
        sa.Column("detached", sa.Boolean(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["planner_id"], ["app_user.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["unit_id"], ["resource_unit.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("series_id", "occurrence_key"),
    )
    with op.batch_alter_table("reservation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reservation_long",
            ["resource_id", "block_end"],
            unique=False,
            sqlite_where=sa.text("long_span"),
            postgresql_where=sa.text("long_span"),
        )
        batch_op.create_index("ix_reservation_planner_status", ["planner_id", "status", "end"], unique=False)
        batch_op.create_index("ix_reservation_resource_block", ["resource_id", "block_start"], unique=False)
        batch_op.create_index(batch_op.f("ix_reservation_series_id"), ["series_id"], unique=False)
        batch_op.create_index("ix_reservation_unit_block", ["unit_id", "block_start"], unique=False)

    op.create_table(
        "reservation_beneficiary",
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["reservation_id"], ["reservation.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("reservation_id", "user_id"),
    )
    with op.batch_alter_table("reservation_beneficiary", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reservation_beneficiary_user_id"), ["user_id"], unique=False)

    _create_exclusion()


def downgrade() -> None:
    _drop_exclusion()
    with op.batch_alter_table("reservation_beneficiary", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservation_beneficiary_user_id"))

    op.drop_table("reservation_beneficiary")
    with op.batch_alter_table("reservation", schema=None) as batch_op:
        batch_op.drop_index("ix_reservation_unit_block")
        batch_op.drop_index(batch_op.f("ix_reservation_series_id"))
        batch_op.drop_index("ix_reservation_resource_block")
        batch_op.drop_index(
            "ix_reservation_long", sqlite_where=sa.text("long_span"), postgresql_where=sa.text("long_span")
        )
        batch_op.drop_index("ix_reservation_planner_status")

    op.drop_table("reservation")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_resource_id"))
        batch_op.drop_index(batch_op.f("ix_series_planner_id"))

    op.drop_table("series")
    op.drop_table("idempotency_record")
