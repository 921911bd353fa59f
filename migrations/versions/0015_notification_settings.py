"""notifications: per-site reminder and follow-up settings, completed bookings, waitlist holds

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 19:10:00
"""

from __future__ import annotations

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


# Nothing to change in the schema: the reminder and follow-up settings are booking-rule fields
# (stored in the rules JSON of sites, venues and resources), `completed` is an existing status, a
# follow-up rides on the outbox's `available_at`, and a held place is an `offered` waitlist entry.


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
