"""Booking throughput and latency through HTTP at 50 concurrent clients, beside a trivial endpoint
(/healthz) of the same server measured in the same run.

    .venv/bin/python -m bench.booking_http [--backend sqlite|postgresql|both] [--seconds 10]

Target (issue 3): booking at least 40% of the trivial endpoint's rate; 0 double bookings.
The server runs in its own process (one uvicorn worker); the load comes from wrk
(Debian package `wrk`), whose Lua script is bench/wrk_load.lua.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, text

from bench.common import fresh_database, pg_reachable, site_document
from bench.harness import bulk_residents, free_port
from bookgate.provision import apply_site_file
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session, utcnow
from core.models import Site

CLIENTS = 50
LUA = Path(__file__).with_name("wrk_load.lua")


def _wrk(base: str, seconds: float, mode: str, tokens_file: Path, day0: int) -> dict:
    """Run wrk (a C load generator, so the client is never the bottleneck) and read its JSON line."""
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_TOKENS": str(tokens_file), "BENCH_DAY0": str(day0)}
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds:.0f}s", "--timeout", "30s", "-s", str(LUA), base],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return json.loads(line)


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


def double_bookings(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return c.execute(
            text(
                "SELECT count(*) FROM reservation a JOIN reservation b ON a.unit_id = b.unit_id AND a.id < b.id "
                "WHERE a.exclusive AND a.status IN ('confirmed','checked_in') "
                "AND b.status IN ('confirmed','checked_in') "
                "AND a.block_start < b.block_end AND b.block_start < a.block_end"
            )
        ).scalar_one()


def run(backend: str, seconds: float) -> None:
    with fresh_database(backend, Path("var/bench"), pool_size=5, max_overflow=5) as (url, engine):
        apply_site_file(engine, parse_site_document(site_document(1, 100)), SYSTEM)
        with read_session(engine) as s:
            site_id = s.exec(select(Site.id)).scalar_one()
        tokens = [t for _, t in bulk_residents(engine, site_id, CLIENTS, "bench")]
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.serve_app", "--database-url", url, "--port", str(port)],
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_up(base, proc)
            day0 = int((utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0).timestamp())
            tokens_file = Path("var/bench/tokens.txt")
            tokens_file.write_text("\n".join(tokens) + "\n")
            _wrk(base, 2, "trivial", tokens_file, day0)  # warm-up
            trivial = _wrk(base, seconds, "trivial", tokens_file, day0)
            booking = _wrk(base, seconds, "booking", tokens_file, day0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rate_t = trivial["requests"] / trivial["seconds"]
        rate_b = booking["requests"] / booking["seconds"]
        created = booking["codes"].get("201", 0) / booking["seconds"]
        print(f"{backend}: {CLIENTS} concurrent connections (wrk), {seconds:.0f} s each, one uvicorn worker")
        for label, r, rate in (("trivial GET /healthz", trivial, rate_t), ("booking POST        ", booking, rate_b)):
            print(
                f"  {label} {rate:7.0f} req/s  p50={r['p50_ms']:.1f} ms p95={r['p95_ms']:.1f} ms  "
                f"codes={r['codes']} socket errors={r['errors']}"
            )
        print(
            f"  bookings created: {created:.0f}/s; ratio booking/trivial: {rate_b / rate_t:.0%} (target >= 40%); "
            f"double bookings: {double_bookings(engine)}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        run(backend, args.seconds)


if __name__ == "__main__":
    main()
