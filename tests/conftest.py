"""Real databases for every test: a SQLite file always, PostgreSQL wherever one is reachable.

PostgreSQL: BOOKGATE_TEST_POSTGRES_URL (a server URL whose database we may create others from),
else 127.0.0.1:5432 as user postgres. Each run creates its own databases and drops them after.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bookgate import migrate
from bookgate.app import create_app
from config import Settings
from core import auth
from core.audit import SYSTEM
from core.db import make_engine, write_session
from core.models import User
from core.security import PasswordHashing
from migrations.models import load_all_models


class _TestEnv(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKGATE_TEST_")
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_server_url() -> str | None:
    url = _TestEnv().postgres_url
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        eng = create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
    except Exception:
        return None
    return url


PG_SERVER = _pg_server_url()

# Real Argon2id, at a cost that keeps hundreds of test logins fast; production keeps the default.
# Argon2id at its lowest cost keeps hundreds of logins fast; production settings keep their own.
CHEAP_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
TEST_HASHING = PasswordHashing(time_cost=1, memory_kib=1024, parallelism=1)
BACKENDS = ["sqlite", "postgresql"]


def pytest_report_header(config: pytest.Config) -> str:
    if PG_SERVER:
        return f"databases: SQLite file and PostgreSQL at {make_url(PG_SERVER).render_as_string()}"
    return "databases: SQLite only -- no PostgreSQL reachable, PostgreSQL variants are skipped"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.write_line(pytest_report_header(config))


@dataclass
class Database:
    backend: str
    url: str
    drop: Callable[[], None]


def create_database(backend: str, tmp_dir: Path) -> Database:
    """A new empty database of the given backend."""
    if backend == "sqlite":
        path = tmp_dir / f"db-{secrets.token_hex(4)}.sqlite"
        return Database(backend, f"sqlite:///{path}", lambda: None)
    if PG_SERVER is None:
        pytest.skip("PostgreSQL not reachable (set BOOKGATE_TEST_POSTGRES_URL)")
    name = f"bookgate_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return Database(backend, url, drop)


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, unmigrated database on each backend."""
    db = create_database(request.param, tmp_path)
    yield db
    db.drop()


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = create_database(request.param, tmp_path_factory.mktemp(request.param))
    engine = make_engine(db.url)
    migrate.upgrade(engine)
    engine.dispose()
    yield db
    db.drop()


def _tables() -> list[str]:
    return [t.name for t in load_all_models().sorted_tables]


@pytest.fixture
def engine(migrated_db: Database, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: a copy of the template file (SQLite) or truncated (PostgreSQL)."""
    if migrated_db.backend == "sqlite":
        template = Path(make_url(migrated_db.url).database or "")
        copy = tmp_path / "bookgate.sqlite"
        shutil.copyfile(template, copy)
        for suffix in ("-wal", "-shm"):
            if Path(str(template) + suffix).exists():
                shutil.copyfile(str(template) + suffix, str(copy) + suffix)
        eng = make_engine(f"sqlite:///{copy}")
        yield eng
        eng.dispose()
        return
    eng = make_engine(migrated_db.url)
    yield eng
    with eng.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(_tables())} RESTART IDENTITY CASCADE"))
    eng.dispose()


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Periodic jobs are started by the tests that are about them, with their own clock.
    return Settings(var_dir=tmp_path / "var", scheduler=False, _env_file=None, **CHEAP_HASHING)  # type: ignore[call-arg]


@pytest.fixture
def app(settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    return create_app(settings, engine=engine, migrate_on_start=False)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


def new_password() -> str:
    return secrets.token_urlsafe(12)


@pytest.fixture
def make_user(engine: Engine) -> Callable[..., tuple[User, str]]:
    """Create a user with roles; returns (user, password)."""
    counter = iter(range(1, 10_000))

    def _make(
        *roles: auth.RoleIn | dict, email: str | None = None, name: str = "Test User", unit: str | None = None
    ) -> tuple[User, str]:
        password = new_password()
        data = auth.UserCreate(
            email=email or f"user{next(counter)}-{secrets.token_hex(3)}@example.com",
            name=name,
            unit=unit,
            password=password,
            roles=[r if isinstance(r, auth.RoleIn) else auth.RoleIn(**r) for r in roles],
        )
        with write_session(engine) as s:
            user = auth.create_user(s, SYSTEM, data, TEST_HASHING)
        return user, password

    return _make


def login(client: TestClient, email: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def admin_headers(client: TestClient, make_user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    user, password = make_user({"role": "admin"}, email="root-admin@example.com")
    return login(client, user.email, password)


@pytest.fixture
def example_site(engine: Engine) -> None:
    from bookgate.provision import import_site_file
    from config.site import example_path

    import_site_file(engine, example_path(), SYSTEM)
