"""visitors: visitors, visits, series, the deny list, visitor policies and the visit event log

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 15:00:00

Visitors' personal data lives in `visitor` only; the door side and the audit trail know a
visitor by a pseudonymous `app_user` row, so a retention purge empties `visitor` and the audit
chain still verifies. `visit_event` is the change table every node's on-site stream polls.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visitor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("name_norm", sa.String(length=200), nullable=True),
        sa.Column("email_norm", sa.String(length=254), nullable=True),
        sa.Column("phone_norm", sa.String(length=40), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("purged_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("visitor", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visitor_site_id"), ["site_id"], unique=False)
        batch_op.create_index("ix_visitor_site_name", ["site_id", "name_norm"], unique=False)
        batch_op.create_index(batch_op.f("ix_visitor_user_id"), ["user_id"], unique=False)
    op.create_table(
        "visitor_deny",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name_norm", sa.String(length=200), nullable=True),
        sa.Column("email_norm", sa.String(length=254), nullable=True),
        sa.Column("phone_norm", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("visitor_deny", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visitor_deny_site_id"), ["site_id"], unique=False)
    op.create_table(
        "visitor_policy",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("closing_time", sa.String(length=5), nullable=True),
        sa.Column("auto_checkout_hours", sa.Integer(), nullable=True),
        sa.Column("release_minutes", sa.Integer(), nullable=False),
        sa.Column("margin_minutes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site_id"),
    )
    op.create_table(
        "visit_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("visitor_id", sa.Integer(), nullable=False),
        sa.Column("rule", core.db.JSONText(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["visitor_id"], ["visitor.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "visit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("visitor_id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("start", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("door_ids", core.db.JSONText(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("token_nonce", sa.String(length=64), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("qr_credential_id", sa.Integer(), nullable=True),
        sa.Column("badge_credential_id", sa.Integer(), nullable=True),
        sa.Column("hold_reason", sa.String(length=200), nullable=True),
        sa.Column("checked_in_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_out_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["badge_credential_id"], ["credential.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["host_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["qr_credential_id"], ["credential.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["series_id"], ["visit_series.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["visitor_id"], ["visitor.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_host_id"), ["host_id"], unique=False)
        batch_op.create_index("ix_visit_site_start", ["site_id", "start"], unique=False)
        batch_op.create_index("ix_visit_status", ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_visit_token_hash"), ["token_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_visit_visitor_id"), ["visitor_id"], unique=False)
    op.create_table(
        "visit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("visit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_visit_event_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    for name in ("visit_event", "visit", "visit_series", "visitor_policy", "visitor_deny", "visitor"):
        op.drop_table(name)
