"""Shared bench plumbing: fresh databases, a generated site, timing statistics."""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bookgate import migrate
from core.db import make_engine

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pg_reachable(url: str = PG_SERVER) -> bool:
    try:
        eng = create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@contextmanager
def fresh_database(backend: str, workdir: Path, **engine_kw) -> Iterator[tuple[str, Engine]]:
    """A migrated empty database; dropped (PostgreSQL) or left in workdir (SQLite) afterwards."""
    if backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"bench-{secrets.token_hex(3)}.db"
        url = f"sqlite:///{path}"
        engine = make_engine(url, **engine_kw)
        migrate.upgrade(engine)
        try:
            yield url, engine
        finally:
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = f"bookgate_bench_{secrets.token_hex(4)}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, **engine_kw)
    migrate.upgrade(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def site_document(venues: int, per_venue: int, *, timezone: str = "Europe/Paris", key: str = "bench") -> dict:
    """A site with `venues` x `per_venue` exclusive rooms, open around the clock."""
    all_day = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return {
        "version": 1,
        "sites": [
            {
                "key": key,
                "name": "Bench site",
                "timezone": timezone,
                "defaults": {
                    "slot_minutes": 60,
                    "min_minutes": 60,
                    "max_minutes": 240,
                    "opening_hours": all_day,
                    "notice_max_days": 3650,
                    "max_active_per_user": 1_000_000,
                },
                "venues": [
                    {
                        "key": f"v{v:03d}",
                        "name": f"Venue {v}",
                        "resources": [
                            {"key": f"r{v:03d}-{r:03d}", "name": f"Room {v}.{r}", "kind": "room"}
                            for r in range(per_venue)
                        ],
                    }
                    for v in range(venues)
                ],
            }
        ],
    }


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values_ms: list[float]) -> str:
    return (
        f"n={len(values_ms)} p50={statistics.median(values_ms):.2f} ms "
        f"p95={percentile(values_ms, 95):.2f} ms max={max(values_ms):.2f} ms"
    )
