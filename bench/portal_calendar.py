"""The resident's calendar page of a venue of 20 resources, with 1,000,000 reservations stored.

    .venv/bin/python -m bench.portal_calendar [--backend sqlite|postgresql|both] [--reservations N]

Target (issue 15): server time of `GET /book?venue=...&day=...` p95 <= 100 ms. The page is
requested in-process through the whole app (ASGI, session cookie, template), with `/healthz` of
the same app as the baseline; 50 venues of 20 rooms hold the reservations (1,000 rooms, about
70 % of the hourly slots of 58 days booked, as in `bench.availability`).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from bench.availability import EPOCH
from bench.common import fresh_database, pg_reachable, site_document, summary
from bench.harness import bulk_residents
from bms.models import Reservation, ResourceUnit
from bookgate.app import create_app
from bookgate.provision import apply_site_file
from config import Settings
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session
from core.deps import SESSION_COOKIE
from core.models import Site, User, Venue

PER_VENUE = 20


def populate(engine, n_reservations: int, n_resources: int, seed: int = 7) -> tuple[int, float]:
    """Venues of 20 rooms and `n_reservations` confirmed hourly bookings spread over them."""
    t0 = time.perf_counter()
    apply_site_file(engine, parse_site_document(site_document(n_resources // PER_VENUE, PER_VENUE)), SYSTEM)
    with engine.begin() as conn:
        planner = conn.execute(insert(User).values(email="bench@example.com", name="Bench").returning(User.id)).scalar()
        units = conn.execute(select(ResourceUnit.id, ResourceUnit.resource_id)).all()
    per = n_reservations // len(units)
    hours = int(per * 1.4)
    rng = random.Random(seed)
    batch: list[dict] = []
    for unit_id, resource_id in units:
        for h in sorted(rng.sample(range(hours), per)):
            start = EPOCH + timedelta(hours=h)
            end = start + timedelta(hours=1)
            batch.append(
                dict(
                    resource_id=resource_id, unit_id=unit_id, planner_id=planner, start=start, end=end,
                    block_start=start, block_end=end, access_start=start, access_end=end, exclusive=True,
                    long_span=False, places=1, status="confirmed", note="", detached=False, changes=0,
                    created_at=EPOCH, updated_at=EPOCH,
                )
            )  # fmt: skip
            if len(batch) >= 20_000:
                with engine.begin() as conn:
                    conn.execute(insert(Reservation), batch)
                batch.clear()
    if batch:
        with engine.begin() as conn:
            conn.execute(insert(Reservation), batch)
    return hours // 24, time.perf_counter() - t0


def measure(engine, iterations: int, days_span: int) -> tuple[list[float], list[float], int]:
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id)).scalars().one()
        venues = list(s.exec(select(Venue.key)).scalars())
    [(_uid, token)] = bulk_residents(engine, site_id, 1, "calendar")
    app = create_app(Settings(scheduler=False, _env_file=None), engine=engine, migrate_on_start=False)  # type: ignore[call-arg]
    rng = random.Random(11)
    page_ms, base_ms = [], []
    slots = 0
    with TestClient(app) as client:
        client.cookies.set(SESSION_COOKIE, token)
        gc.collect()
        gc.freeze()  # as the server does after start-up
        for i in range(iterations + 10):
            day = (EPOCH + timedelta(days=rng.randrange(days_span - 1))).date().isoformat()
            venue = rng.choice(venues)
            t = time.perf_counter()
            r = client.get("/book", params={"venue": venue, "day": day}, headers={"Accept-Language": "fr"})
            elapsed = (time.perf_counter() - t) * 1000
            assert r.status_code == 200, r.text[:200]
            slots = r.text.count('class="slot slot-')
            t = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            healthz = (time.perf_counter() - t) * 1000
            if i >= 10:
                page_ms.append(elapsed)
                base_ms.append(healthz)
    return page_ms, base_ms, slots


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--reservations", type=int, default=1_000_000)
    p.add_argument("--resources", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=200)
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        with fresh_database(backend, Path("var/bench")) as (_url, engine):
            days_span, load_s = populate(engine, args.reservations, args.resources)
            page, base = measure(engine, args.iterations, days_span)[:2]
            print(f"{backend}: {args.reservations:,} reservations, {args.resources} rooms (loaded in {load_s:.0f} s)")
            print(f"  calendar page, venue of {PER_VENUE}, one day: {summary(page)}   target p95 <= 100 ms")
            print(f"  /healthz of the same app (baseline):   {summary(base)}")


if __name__ == "__main__":
    main()
