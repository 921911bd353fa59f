"""controller live state

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 11:37:04.757499
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("controller", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state", sa.String(length=10), nullable=False, server_default="unknown"))
        batch_op.add_column(sa.Column("last_seen", core.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_sync", core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("controller", schema=None) as batch_op:
        batch_op.drop_column("last_sync")
        batch_op.drop_column("last_seen")
        batch_op.drop_column("state")
