"""availability: what the venue-day read path needs to stay fast (cache versions, indexes)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 19:15:00

`cache_stamp` holds one random stamp per cached thing; writers of resources, units and rules
replace it in their transaction, readers compare it before trusting what they hold.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_stamp",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("stamp", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("cache_stamp")
