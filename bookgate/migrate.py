"""Alembic, driven from code: `bookgate db upgrade`, the server's start, and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations


class MigrationError(RuntimeError):
    """A migration failed; the database was left as it was before the run."""


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    try:
        command.upgrade(alembic_config(engine), revision)
    except Exception as exc:
        raise MigrationError(f"migration to {revision} failed and was rolled back: {exc}") from exc


def downgrade(engine: Engine, revision: str) -> None:
    try:
        command.downgrade(alembic_config(engine), revision)
    except Exception as exc:
        raise MigrationError(f"downgrade to {revision} failed and was rolled back: {exc}") from exc


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)
