"""canonical badge identities: format, compact spelling, uniqueness per format

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:40:00

Badges were stored upper-cased as typed. They become lower-case hex with two digits per byte and
a format: 5-byte values are EM4100 tags, the rest ISO 14443 serials. A legacy value with an odd
number of digits is left-padded with one zero (the only reading that keeps every digit).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_credential = sa.table(
    "credential",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("format", sa.String),
    sa.column("value", sa.String),
    sa.column("compact", sa.String),
)


def _compact(value: str) -> str | None:
    try:
        return "".join(format(b, "x") for b in bytes.fromhex(value))
    except ValueError:
        return None


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table(
        "credential", schema=None, naming_convention={"uq": "%(table_name)s_%(column_0_name)s_%(column_1_name)s_key"}
    ) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=10), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("compact", sa.String(length=40), nullable=True))
        batch_op.drop_constraint("credential_kind_value_key", type_="unique")
    rows = conn.execute(sa.select(_credential.c.id, _credential.c.value).where(_credential.c.kind == "badge")).all()
    for row_id, value in rows:
        text = value.strip().lower()
        if len(text) % 2:
            text = "0" + text
        fmt = "em4100" if len(text) == 10 else "uid"
        conn.execute(
            sa.update(_credential)
            .where(_credential.c.id == row_id)
            .values(value=text, format=fmt, compact=_compact(text) if fmt == "uid" else None)
        )
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.alter_column("format", server_default=None)
        batch_op.create_unique_constraint("uq_credential_kind_format_value", ["kind", "format", "value"])
        batch_op.create_index("ix_credential_compact", ["compact"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_index("ix_credential_compact")
        batch_op.drop_constraint("uq_credential_kind_format_value", type_="unique")
        batch_op.create_unique_constraint("credential_kind_value_key", ["kind", "value"])
        batch_op.drop_column("compact")
        batch_op.drop_column("format")
