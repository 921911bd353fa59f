"""Availability with a million reservations: one resource for a week, a venue of 100 for a day.

    .venv/bin/python -m bench.availability [--backend sqlite|postgresql|both] [--reservations N]

Targets (issues 3 and 17): resource-week p95 <= 10 ms; venue-day (100 resources) p95 <= 50 ms
in-process and <= 80 ms over HTTP.

In-process: the same calls the API route makes (cached venue contexts, one range query, the
response body in either form), after `gc.freeze()` as the server does; beside them, the day as
`ResourceAvailability` models over freshly read contexts (what the route did before the compact
form and the cache, and what the portal's Python callers still get).
Over HTTP: a real uvicorn server in its own process (`bench.serve_app`), one request at a time
from one client, `GET /api/v1/venues/{key}/availability?date=..&format=compact|full`, with
`/healthz` of the same server as the baseline, interleaved in the same run.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from bench.common import fresh_database, percentile, pg_reachable, site_document, summary
from bench.harness import bulk_residents, free_port
from bms import availability, resources
from bms.models import Reservation, Resource, ResourceUnit
from bookgate.provision import apply_site_file
from config.site import parse_site_document
from core import auth
from core.audit import SYSTEM
from core.db import read_session
from core.models import RoleGrant, Site, User, Venue

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


def measure(engine, iterations: int, days_span: int) -> dict[str, list[float]]:
    """In-process timings (ms) by label."""
    rng = random.Random(11)
    with read_session(engine) as s:
        keys = list(s.exec(select(Resource.key)).scalars())
        venue_keys = list(s.exec(select(Venue.key)).scalars())
        admin = auth.load_principal(s, s.exec(select(User).where(User.email == "bench@example.com")).scalars().one())
    out: dict[str, list[float]] = {"week": [], "compact": [], "full": [], "models": []}
    sizes: dict[str, int] = {}
    for i in range(iterations + 10):
        key = rng.choice(keys)
        start = EPOCH + timedelta(days=rng.randrange(days_span - 7))
        vkey = rng.choice(venue_keys)
        day = (EPOCH + timedelta(days=rng.randrange(days_span - 1))).date()
        for label in out:  # the week, then the same day in three forms, in turn
            t = time.perf_counter()
            with read_session(engine) as s:
                if label == "week":
                    ctx = availability.visible_resource(s, admin, key)  # as the route: cached context
                    week = availability.resource_availability(s, ctx, start, start + timedelta(days=7))
                    assert len(week.slots) == 7 * 24
                elif label == "models":
                    models = availability.venue_availability(s, resources.venue_contexts(s, admin, vkey), day)
                    assert len(models) == 100
                else:
                    venue = availability.venue_day(s, availability.venue_contexts(s, admin, vkey), day)
                    sizes[label] = len(venue.compact_json() if label == "compact" else venue.full_json())
            if i >= 10:  # the first calls warm caches and the pool
                out[label].append((time.perf_counter() - t) * 1000)
    print(f"  response bodies: compact {sizes['compact'] / 1000:.0f} KB, full {sizes['full'] / 1000:.0f} KB")
    return out


def _wait_up(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def measure_http(url: str, engine, iterations: int, days_span: int) -> dict[str, list[float]]:
    """Client-side latency (ms) of one request at a time to a uvicorn server in its own process."""
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id)).scalars().one()
        venue_keys = list(s.exec(select(Venue.key)).scalars())
    [(_uid, token)] = bulk_residents(engine, site_id, 1, "avail")
    port = free_port()
    # A var dir of its own: the audit checkpoint file there belongs to this database only.
    var = Path(tempfile.mkdtemp(prefix="serve-", dir=Path("var/bench")))
    cmd = [sys.executable, "-m", "bench.serve_app", "--database-url", url, "--port", str(port), "--var-dir", str(var)]
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, list[float]] = {"healthz": [], "compact": [], "full": []}
    rng = random.Random(13)
    try:
        _wait_up(base, proc)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            for i in range(iterations + 10):
                vkey = rng.choice(venue_keys)
                day = (EPOCH + timedelta(days=rng.randrange(days_span - 1))).date().isoformat()
                for label in ("healthz", "compact", "full"):
                    path = "/healthz" if label == "healthz" else f"/api/v1/venues/{vkey}/availability"
                    params = {} if label == "healthz" else {"date": day, "format": label}
                    t = time.perf_counter()
                    r = client.get(path, params=params)
                    elapsed = (time.perf_counter() - t) * 1000
                    assert r.status_code == 200, r.text[:200]
                    if label != "healthz":
                        assert len(r.json()) == 100
                    if i >= 10:
                        out[label].append(elapsed)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(var, ignore_errors=True)
    return out


def _vs(values: list[float], base: list[float]) -> str:
    p50 = statistics.median(values) / statistics.median(base)
    return f"({p50:.1f}x the baseline at p50, {percentile(values, 95) / percentile(base, 95):.1f}x at p95)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--reservations", type=int, default=1_000_000)
    p.add_argument("--resources", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--no-http", action="store_true", help="in-process figures only")
    args = p.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        with fresh_database(backend, Path("var/bench")) as (url, engine):
            load_s = populate(engine, args.reservations, args.resources)
            per = args.reservations // args.resources
            days_span = int(per * 1.4) // 24
            print(
                f"{backend}: {args.reservations:,} reservations over {args.resources} resources "
                f"(loaded in {load_s:.0f} s)"
            )
            gc.collect()
            gc.freeze()  # as the server does after start-up
            m = measure(engine, args.iterations, days_span)
            gc.unfreeze()
            print("  in-process:")
            print(f"    resource, one week ({7 * 24} slots):  {summary(m['week'])}   target p95 <= 10 ms")
            print(f"    venue of 100, one day, compact:    {summary(m['compact'])}   target p95 <= 50 ms")
            print(f"    venue of 100, one day, full:       {summary(m['full'])}")
            print(f"    the same as models, contexts read: {summary(m['models'])}")
            if args.no_http:
                continue
            h = measure_http(url, engine, args.iterations, days_span)
            print("  over HTTP (uvicorn, own process, one request at a time):")
            print(f"    GET /healthz (baseline):            {summary(h['healthz'])}")
            print(
                f"    venue of 100, one day, compact:    {summary(h['compact'])}   target p95 <= 80 ms "
                f"{_vs(h['compact'], h['healthz'])}"
            )
            print(f"    venue of 100, one day, full:       {summary(h['full'])}   {_vs(h['full'], h['healthz'])}")


if __name__ == "__main__":
    main()
