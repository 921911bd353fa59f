from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

import migrations
from bookgate import migrate
from core.db import make_engine
from migrations.models import load_all_models


def test_upgrade_downgrade_upgrade(fresh_db):
    engine = make_engine(fresh_db.url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in load_all_models().sorted_tables} <= tables
        migrate.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
    finally:
        engine.dispose()


def test_models_match_migrations(fresh_db):
    """The tables the code declares are exactly what the migrations build."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(fresh_db.url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), load_all_models())
        assert diff == []
    finally:
        engine.dispose()


def test_failed_migration_leaves_the_database_as_it_was(fresh_db, tmp_path: Path):
    scripts = tmp_path / "scripts"
    shutil.copytree(Path(migrations.__file__).parent, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    engine = make_engine(fresh_db.url)
    head = migrate.head_revision(engine)
    (scripts / "versions" / "0099_broken.py").write_text(
        '"""broken"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n"
        f"revision = '0099'\ndown_revision = '{head}'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n"
        "    op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))\n"
        "    op.add_column('app_user', sa.Column('shoe_size', sa.Integer))\n"
        "    op.execute('SELECT * FROM no_such_table')\n"
        "def downgrade():\n    pass\n"
    )
    try:
        migrate.upgrade(engine)
        cfg = migrate.alembic_config(engine)
        cfg.set_main_option("script_location", str(scripts))
        with pytest.raises(Exception, match="no_such_table"):
            command.upgrade(cfg, "head")
        insp = inspect(engine)
        assert "half_done" not in insp.get_table_names()
        assert "shoe_size" not in {c["name"] for c in insp.get_columns("app_user")}
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()


def test_readyz_reports_pending_migrations(fresh_db, settings):
    from fastapi.testclient import TestClient

    from bookgate.app import create_app

    engine = make_engine(fresh_db.url)
    try:
        app = create_app(settings, engine=engine, migrate_on_start=False)
        with TestClient(app) as client:
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["migrations"] == "behind"
        app = create_app(settings, engine=engine, migrate_on_start=True)
        with TestClient(app) as client:  # the server upgrades the database at start
            r = client.get("/readyz")
            assert r.status_code == 200 and r.json()["status"] == "ready"
    finally:
        engine.dispose()
