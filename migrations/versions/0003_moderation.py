"""moderation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:44:22.740456
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "moderation_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=True),
        sa.Column("conditions", core.db.JSONText(), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["venue_id"], ["venue.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope"),
    )
    with op.batch_alter_table("moderation_policy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_moderation_policy_venue_id"), ["venue_id"], unique=False)

    op.create_table(
        "venue_document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["venue_id"], ["venue.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("venue_document", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_venue_document_venue_id"), ["venue_id"], unique=False)

    op.create_table(
        "moderation_proposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("start", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("proposed_by", sa.Integer(), nullable=False),
        sa.Column("based_on", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["reservation_id"], ["reservation.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["unit_id"], ["resource_unit.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("moderation_proposal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_moderation_proposal_reservation_id"), ["reservation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("moderation_proposal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_moderation_proposal_reservation_id"))

    op.drop_table("moderation_proposal")
    with op.batch_alter_table("venue_document", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_venue_document_venue_id"))

    op.drop_table("venue_document")
    with op.batch_alter_table("moderation_policy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_moderation_policy_venue_id"))

    op.drop_table("moderation_policy")
