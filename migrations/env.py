from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from core.db import make_engine
from migrations.models import load_all_models

target_metadata = load_all_models()


def run_migrations_online() -> None:
    engine: Engine | None = context.config.attributes.get("engine")
    own = engine is None
    if engine is None:
        url = context.config.get_main_option("sqlalchemy.url")
        if not url:
            raise SystemExit("no database URL given to Alembic")
        engine = make_engine(url)
    # One transaction around the whole run: a failing step leaves the database as it was
    # (PostgreSQL and SQLite both have transactional DDL; our SQLite engine emits BEGIN itself).
    with engine.connect().execution_options(bookgate_write=True) as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            transaction_per_migration=False,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    if own:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `bookgate db upgrade`")
run_migrations_online()
