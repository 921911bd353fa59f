"""Every table of every package, gathered for Alembic and for test set-up."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel


def load_all_models() -> MetaData:
    import access.models  # noqa: F401
    import bms.models
    import bms.waitlist  # noqa: F401
    import core.audit
    import core.models
    import core.outbox  # noqa: F401
    import moderation.models  # noqa: F401
    import notify.models  # noqa: F401
    import vms.models  # noqa: F401

    return SQLModel.metadata
