"""Two gateway nodes on one PostgreSQL against one node: booking throughput over HTTP.

    .venv/bin/python -m bench.two_nodes [--seconds 10] [--workers 1]

Each node is its own server process (bench.serve_app, `--workers` uvicorn workers, its own var
dir, so its own leader running drivers and the clock); both share one database and secret key.
Phases, in one run on one database: /healthz on one node (baseline), booking on one node at 50
clients, then booking on both nodes at once, 25 clients each (wrk, bench/wrk_load.lua), then
0 double bookings checked. Target (issue 17): two nodes >= 1.6x one node. On a machine with fewer
cores than nodes plus database plus load generator that cannot show, so every phase also prints
the CPU seconds per booking request spent by the gateway processes and by PostgreSQL, and the
machine's CPU use: the profile that says where the limit is.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bench.booking_http import (
    CLIENTS,
    _wrk,
    double_bookings,
    need_wrk,
    postgres_cpu,
    start_server,
    stop_server,
    tree_cpu,
)
from bench.common import fresh_database, pg_reachable, site_document
from bench.harness import bulk_residents
from bookgate.provision import apply_site_file
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session, utcnow
from core.models import Site


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _phase(label: str, servers: list, seconds: float, day0: int, tokens_file: Path, clients: int) -> float:
    """wrk against every server at once (`clients` each); prints rate and profile, returns req/s."""
    cpu0 = [tree_cpu(p.pid) for p, _ in servers]
    pg0, (busy0, all0) = postgres_cpu(), _machine_busy()
    started = time.monotonic()
    with ThreadPoolExecutor(len(servers)) as pool:
        mode = "trivial" if "healthz" in label else "booking"
        runs = list(pool.map(lambda s: _wrk(s[1], seconds, mode, tokens_file, day0, clients=clients), servers))
    wall = time.monotonic() - started
    cpu1 = [tree_cpu(p.pid) for p, _ in servers]
    pg1, (busy1, all1) = postgres_cpu(), _machine_busy()
    total = sum(r["requests"] for r in runs)
    rate = sum(r["requests"] / r["seconds"] for r in runs)
    p95 = max(r["p95_ms"] for r in runs)
    codes: dict[str, int] = {}
    for r in runs:
        for code, count in r["codes"].items():
            codes[code] = codes.get(code, 0) + count
    n = max(total, 1)
    per_node = ", ".join(f"{1000 * (b - a) / n:.1f}" for a, b in zip(cpu0, cpu1, strict=True))
    ncpu = os.cpu_count() or 1
    print(
        f"  {label:<38} {rate:7.0f} req/s  p95={p95:.0f} ms  codes={codes}\n"
        f"  {'':<38} CPU per request: gateway node(s) {per_node} ms, PostgreSQL {1000 * (pg1 - pg0) / n:.1f} ms; "
        f"machine busy {100 * (busy1 - busy0) / max(all1 - all0, 1):.0f}% of {ncpu} CPUs over {wall:.0f} s"
    )
    return rate


def run(seconds: float, workers: int) -> None:
    secret = secrets.token_urlsafe(32)
    var = Path("var/bench") / f"nodes-{secrets.token_hex(3)}"
    with fresh_database("postgresql", Path("var/bench"), pool_size=5, max_overflow=5) as (url, engine):
        apply_site_file(engine, parse_site_document(site_document(1, 100)), SYSTEM)
        with read_session(engine) as s:
            site_id = s.exec(select(Site.id)).scalar_one()
        tokens = [t for _, t in bulk_residents(engine, site_id, CLIENTS, "bench")]
        var.mkdir(parents=True, exist_ok=True)
        tokens_file = var / "tokens.txt"  # not shared with another bench run
        tokens_file.write_text("\n".join(tokens) + "\n")
        day0 = int((utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0).timestamp())
        print(f"postgresql: {workers} uvicorn worker(s) per node, wrk, {seconds:.0f} s per phase")
        one = start_server(url, workers, var / "node1", secret)
        servers = [one]
        try:
            _wrk(one[1], 2, "trivial", tokens_file, day0)  # warm-up
            _phase("one node, GET /healthz, 50 clients", [one], seconds, day0, tokens_file, CLIENTS)
            rate1 = _phase("one node, booking, 50 clients", [one], seconds, day0, tokens_file, CLIENTS)
            two = start_server(url, workers, var / "node2", secret)
            servers.append(two)
            _wrk(two[1], 2, "trivial", tokens_file, day0)
            rate2 = _phase("two nodes, booking, 25 clients each", [one, two], seconds, day0, tokens_file, CLIENTS // 2)
        finally:
            for proc, _ in servers:
                stop_server(proc)
            shutil.rmtree(var, ignore_errors=True)
        print(
            f"  two nodes / one node: {rate2 / rate1:.2f}x (target >= 1.6x); double bookings: {double_bookings(engine)}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers per node")
    args = p.parse_args()
    need_wrk()
    if not pg_reachable():
        print("postgresql: not reachable, skipped (two nodes share a PostgreSQL database)")
        return
    run(args.seconds, args.workers)


if __name__ == "__main__":
    main()
