"""portal language: an account's explicit language choice; names of sites, venues and resources per language

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 19:10:00

Columns are added and dropped with plain ALTER TABLE on both databases (SQLite 3.35+ drops a
column in place): a batch copy of `app_user`, `site`, `venue` or `resource` would drop the
original table, and SQLite's foreign-key actions would empty the tables that point at it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

NAMED = ("site", "venue", "resource")


def upgrade() -> None:
    for table in NAMED:
        op.add_column(table, sa.Column("names", core.db.JSONText(), nullable=False, server_default="{}"))
    op.add_column("app_user", sa.Column("locale_chosen", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Before this, an account's language was "en" unless someone chose another one (the switcher or
    # an admin): those other languages were choices.
    app_user = sa.table("app_user", sa.column("locale", sa.String), sa.column("locale_chosen", sa.Boolean))
    op.execute(app_user.update().where(app_user.c.locale != "en").values(locale_chosen=True))


def downgrade() -> None:
    op.drop_column("app_user", "locale_chosen")
    for table in reversed(NAMED):
        op.drop_column(table, "names")
