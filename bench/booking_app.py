"""A booking request one at a time through the whole app in this process (ASGI, no socket):
routing, authentication, validation, the unit of work, and the node's own background work that a
booking sets off (outbox expansion, audit sealing, the decision index), beside `/healthz` of the
same app, interleaved in the same run.

    .venv/bin/python -m bench.booking_app [--backend sqlite|postgresql|both] [--requests 400]

CPU is this process's (every thread), so the work a booking causes after its commit counts too;
bench.booking_path measures the write path alone, bench.booking_http the server under load.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import statistics
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

from bench.common import fresh_database, pg_reachable, site_document
from bench.harness import bulk_residents
from bookgate.app import create_app
from bookgate.provision import apply_site_file
from config import Settings
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session, utcnow
from core.models import Site

ROUNDS = 4  # healthz and booking alternate, ROUNDS times each


def run(backend: str, n: int) -> None:
    with fresh_database(backend, Path("var/bench"), pool_size=5, max_overflow=5) as (url, engine):
        apply_site_file(engine, parse_site_document(site_document(1, 100)), SYSTEM)
        with read_session(engine) as s:
            site_id = s.exec(select(Site.id)).scalar_one()
        tokens = [t for _, t in bulk_residents(engine, site_id, 50, "app")]
        var = Path("var/bench") / f"app-{secrets.token_hex(3)}"  # its own checkpoint and key files
        var.mkdir(parents=True, exist_ok=True)
        app = create_app(Settings(database_url=url, var_dir=var, _env_file=None))  # type: ignore[call-arg]
        day0 = (utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        slots = [(r, h) for r in range(100) for h in range(24 * 30)]
        random.Random(3).shuffle(slots)
        figures: dict[str, list[tuple[float, float]]] = {"healthz": [], "booking": []}
        codes: dict[int, int] = {}

        async def phase(client: httpx.AsyncClient, mode: str) -> None:
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                if mode == "healthz":
                    r = await client.get("/healthz")
                else:
                    room, hour = slots.pop()
                    start = day0 + timedelta(hours=hour)
                    body = {
                        "resource": f"r000-{room:03d}",
                        "start": start.isoformat(),
                        "end": (start + timedelta(hours=1)).isoformat(),
                    }
                    r = await client.post(
                        "/api/v1/reservations", json=body, headers={"Authorization": f"Bearer {tokens[i % 50]}"}
                    )
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
            figures[mode].append(((time.perf_counter() - w0) * 1000 / n, (time.process_time() - c0) * 1000 / n))

        async def main() -> None:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                    await phase(client, "booking")  # warm-up
                    figures["booking"].clear()
                    for _ in range(ROUNDS):
                        await phase(client, "healthz")
                        await phase(client, "booking")

        try:
            asyncio.run(main())
        finally:
            shutil.rmtree(var, ignore_errors=True)
        med = statistics.median
        print(f"{backend}: {ROUNDS} rounds of {n} requests each, one at a time, in-process ASGI; status codes {codes}")
        for mode in ("healthz", "booking"):
            wall = med(w for w, _ in figures[mode])
            cpu = med(c for _, c in figures[mode])
            print(f"  {mode:8}: {wall:6.2f} ms wall, {cpu:6.2f} ms CPU (all threads) per request (median of rounds)")
        ratio = med(w for w, _ in figures["healthz"]) / med(w for w, _ in figures["booking"])
        print(f"  booking/healthz rate, one at a time: {ratio:.0%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--requests", type=int, default=400)
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        run(backend, args.requests)


if __name__ == "__main__":
    main()
