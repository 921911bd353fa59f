"""Availability with a million reservations: one resource for a week, a venue of 100 for a day.

    .venv/bin/python -m bench.availability [--backend sqlite|postgresql|both] [--reservations N]

Targets (issue 3): resource-week p95 <= 10 ms, venue-day (100 resources) p95 <= 50 ms.
Timed in-process through the same service functions the API calls (no HTTP).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from bench.common import fresh_database, pg_reachable, site_document, summary
from bms import availability
from bms.context import load_many, load_resource
from bms.models import Reservation, Resource, ResourceUnit
from bookgate.provision import apply_site_file
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session
from core.models import RoleGrant, User, Venue

EPOCH = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday


def populate(engine, n_reservations: int, n_resources: int, seed: int = 7) -> float:
    t0 = time.perf_counter()
    venues = max(1, n_resources // 100)
    apply_site_file(engine, parse_site_document(site_document(venues, n_resources // venues)), SYSTEM)
    with engine.begin() as conn:
        user_id = conn.execute(insert(User).values(email="bench@example.com", name="Bench").returning(User.id)).scalar()
        units = conn.execute(select(ResourceUnit.id, ResourceUnit.resource_id)).all()
    per = n_reservations // len(units)
    hours = int(per * 1.4)  # ~70% of the hourly slots over the period are booked
    rng = random.Random(seed)
    batch: list[dict] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(insert(Reservation), batch)
        batch.clear()

    for unit_id, resource_id in units:
        for h in sorted(rng.sample(range(hours), per)):
            start = EPOCH + timedelta(hours=h)
            end = start + timedelta(hours=1)
            batch.append(
                {
                    "resource_id": resource_id,
                    "unit_id": unit_id,
                    "planner_id": user_id,
                    "start": start,
                    "end": end,
                    "block_start": start,
                    "block_end": end,
                    "access_start": start,
                    "access_end": end,
                    "exclusive": True,
                    "long_span": False,
                    "places": 1,
                    "status": "confirmed",
                    "note": "",
                    "detached": False,
                    "changes": 0,
                    "created_at": EPOCH,
                    "updated_at": EPOCH,
                }
            )
            if len(batch) >= 20_000:
                flush()
    if batch:
        flush()
    with engine.begin() as conn:
        conn.execute(insert(RoleGrant).values(user_id=user_id, role="admin"))
    return time.perf_counter() - t0


def measure(engine, iterations: int, days_span: int) -> tuple[list[float], list[float]]:
    rng = random.Random(11)
    with read_session(engine) as s:
        keys = list(s.exec(select(Resource.key)).scalars())
        venue_ids = list(s.exec(select(Venue.id)).scalars())
    week_ms, day_ms = [], []
    for i in range(iterations + 10):
        key = rng.choice(keys)
        start = EPOCH + timedelta(days=rng.randrange(days_span - 7))
        t = time.perf_counter()
        with read_session(engine) as s:
            ctx = load_resource(s, key)
            out = availability.resource_availability(s, ctx, start, start + timedelta(days=7))
        elapsed = (time.perf_counter() - t) * 1000
        assert len(out.slots) == 7 * 24
        if i >= 10:  # the first calls warm caches and the pool
            week_ms.append(elapsed)
        vid = rng.choice(venue_ids)
        day = (EPOCH + timedelta(days=rng.randrange(days_span - 1))).date()
        t = time.perf_counter()
        with read_session(engine) as s:
            resources = list(s.exec(select(Resource).where(Resource.venue_id == vid)).scalars())
            ctxs = load_many(s, resources)
            res = availability.venue_availability(s, ctxs, day)
        elapsed = (time.perf_counter() - t) * 1000
        assert len(res) == len(resources)
        if i >= 10:
            day_ms.append(elapsed)
    return week_ms, day_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--reservations", type=int, default=1_000_000)
    p.add_argument("--resources", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=200)
    args = p.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        with fresh_database(backend, Path("var/bench")) as (_url, engine):
            load_s = populate(engine, args.reservations, args.resources)
            per = args.reservations // args.resources
            days_span = int(per * 1.4) // 24
            gc.collect()
            gc.freeze()  # as the server does after start-up
            week, day = measure(engine, args.iterations, days_span)
            print(
                f"{backend}: {args.reservations:,} reservations over {args.resources} resources "
                f"(loaded in {load_s:.0f} s)"
            )
            print(f"  resource, one week ({7 * 24} slots): {summary(week)}   target p95 <= 10 ms")
            print(f"  venue of 100 resources, one day:      {summary(day)}   target p95 <= 50 ms")


if __name__ == "__main__":
    main()
