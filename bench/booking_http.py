"""Booking throughput and latency through HTTP, beside a trivial endpoint (/healthz) of the same
server at the same worker count, measured in the same run.

    .venv/bin/python -m bench.booking_http [--backend sqlite|postgresql|both] [--seconds 10] [--workers 1,2]

Targets (issue 17): booking at 50 clients at least 40% of the trivial endpoint's rate; p95 latency
at 10 clients <= 200 ms; 0 double bookings. The server runs in its own process (`--workers N`:
uvicorn workers as `bookgate serve --workers N` runs them, one database per run); the load comes
from wrk (Debian package `wrk`), whose Lua script is bench/wrk_load.lua. CPU seconds of the server
processes and of PostgreSQL are read from /proc around each phase: where the time goes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
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
_SEEDS = itertools.count(1)


def need_wrk() -> None:
    """Stop with a clear message, before building any database, when wrk is not installed."""
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark drives its load with wrk, which is not installed (Debian: apt install wrk)")


def _wrk(base: str, seconds: float, mode: str, tokens_file: Path, day0: int, clients: int = CLIENTS) -> dict:
    """Run wrk (a C load generator, so the client is never the bottleneck) and read its JSON line."""
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_TOKENS": str(tokens_file), "BENCH_DAY0": str(day0)}
    env["BENCH_SEED"] = str(next(_SEEDS))  # a phase never replays another's (room, hour) pairs
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "30s", "-s", str(LUA), base],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return json.loads(line)


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its living descendants (a server's workers)."""
    total = _cpu(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        total += sum(tree_cpu(int(c)) for c in children.read_text().split())
    return total


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on the machine (its backends come and go: compare
    two readings taken around one phase)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += _cpu(int(proc.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return total


def start_server(url: str, workers: int, var_dir: Path, secret: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.serve_app", "--database-url", url, "--port", str(port)]
    cmd += ["--workers", str(workers), "--var-dir", str(var_dir)] + (["--secret-key", secret] if secret else [])
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
    except Exception:
        stop_server(proc)
        raise
    return proc, base


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


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


def run(backend: str, seconds: float, workers: int) -> dict:
    with fresh_database(backend, Path("var/bench"), pool_size=5, max_overflow=5) as (url, engine):
        apply_site_file(engine, parse_site_document(site_document(1, 100)), SYSTEM)
        with read_session(engine) as s:
            site_id = s.exec(select(Site.id)).scalar_one()
        tokens = [t for _, t in bulk_residents(engine, site_id, CLIENTS, "bench")]
        var = Path("var/bench") / f"serve-{secrets.token_hex(3)}"  # its own checkpoint, lock, token files
        var.mkdir(parents=True, exist_ok=True)
        proc, base = start_server(url, workers, var)
        try:
            day0 = int((utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0).timestamp())
            tokens_file = var / "tokens.txt"
            tokens_file.write_text("\n".join(tokens) + "\n")
            _wrk(base, 2, "trivial", tokens_file, day0)  # warm-up
            trivial = _wrk(base, seconds, "trivial", tokens_file, day0)
            cpu0, pg0 = tree_cpu(proc.pid), postgres_cpu()
            booking = _wrk(base, seconds, "booking", tokens_file, day0)
            cpu1, pg1 = tree_cpu(proc.pid), postgres_cpu()
            # other residents: those of the phase above may have reached their booking quota
            ten_file = var / "tokens10.txt"
            ten_file.write_text("\n".join(t for _, t in bulk_residents(engine, site_id, CLIENTS, "ten")) + "\n")
            ten = _wrk(base, seconds, "booking", ten_file, day0, clients=10)
        finally:
            stop_server(proc)
            shutil.rmtree(var, ignore_errors=True)
        rate_t = trivial["requests"] / trivial["seconds"]
        rate_b = booking["requests"] / booking["seconds"]
        created = booking["codes"].get("201", 0) / booking["seconds"]
        doubles = double_bookings(engine)
        print(f"{backend}: {workers} uvicorn worker(s), wrk, {seconds:.0f} s per phase")
        for label, r, rate in (
            ("trivial GET /healthz, 50 clients", trivial, rate_t),
            ("booking POST,         50 clients", booking, rate_b),
            ("booking POST,         10 clients", ten, ten["requests"] / ten["seconds"]),
        ):
            print(
                f"  {label} {rate:7.0f} req/s  p50={r['p50_ms']:.1f} ms p95={r['p95_ms']:.1f} ms  "
                f"codes={r['codes']} socket errors={r['errors']}"
            )
        n = max(booking["requests"], 1)
        pg = f", PostgreSQL {1000 * (pg1 - pg0) / n:.1f} ms" if backend == "postgresql" else ""
        print(f"  CPU per booking request (50 clients): server {1000 * (cpu1 - cpu0) / n:.1f} ms{pg}")
        print(
            f"  bookings created: {created:.0f}/s; ratio booking/trivial: {rate_b / rate_t:.0%} (target >= 40%); "
            f"p95 at 10 clients {ten['p95_ms']:.0f} ms (target <= 200 ms); double bookings: {doubles}"
        )
        return {"trivial": rate_t, "booking": rate_b, "p95_10": ten["p95_ms"], "doubles": doubles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--workers", default=str(os.cpu_count() or 1), help="worker counts to measure, e.g. 1,2")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    need_wrk()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        for workers in counts:
            run(backend, args.seconds, workers)


if __name__ == "__main__":
    main()
