"""The booking write path in-process: statements per booking, milliseconds per booking (wall and
this process's CPU), bookings/s of one thread, beside a trivial unit of work (one `SELECT 1` in a
write session) measured in the same run.

    .venv/bin/python -m bench.booking_path [--backend sqlite|postgresql|both] [--bookings 600]
    .venv/bin/python -m bench.booking_path --backend sqlite --profile   # cProfile, top 25 by cumtime

Each booking is what POST /api/v1/reservations runs (`bms.service.create_once` in one write
session, then commit), by a resident of the generated site on a random free hour of one of 100
rooms; the resident has a badge and each room a door, so the access window plans transitions.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import event, text
from sqlmodel import select

from bench.access_rig import esprfid_site_document
from bench.common import fresh_database, pg_reachable
from bench.harness import bulk_residents
from bms import service
from bookgate.provision import apply_site_file
from config.site import parse_site_document
from core.audit import SYSTEM
from core.auth import Principal
from core.db import read_session, utcnow, write_session
from core.models import Site

ROOMS = 100
BATCH = 50


def _site() -> dict:
    return esprfid_site_document(ROOMS, "bench-path")


def _add_badges(engine, user_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    from access.models import Credential

    with write_session(engine) as s:
        for uid in user_ids:
            value = f"ba{uid:06x}"
            s.add(Credential(user_id=uid, kind="badge", format="uid", value=value, compact=value))


def _counter(engine):  # type: ignore[no-untyped-def]
    count = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not statement.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")):
            count[0] += 1

    return count


def run(backend: str, n: int, profile: bool) -> None:
    with fresh_database(backend, Path("var/bench"), pool_size=5, max_overflow=5) as (_url, engine):
        apply_site_file(engine, parse_site_document(_site()), SYSTEM)
        with read_session(engine) as s:
            site_id = s.exec(select(Site.id)).one()
        people = bulk_residents(engine, site_id, 20, "bp")
        _add_badges(engine, [uid for uid, _ in people])
        principals = [
            Principal(uid, f"bp{uid}@example.com", "bp", "en", resident_sites=frozenset({site_id})) for uid, _ in people
        ]
        day0 = (utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        slots = [(r, h) for r in range(ROOMS) for h in range(24 * 30)]
        random.Random(7).shuffle(slots)
        statements = _counter(engine)

        def one_booking(i: int) -> None:
            room, hour = slots[i]
            start = day0 + timedelta(hours=hour)
            data = service.ReservationCreate(resource=f"r000-{room:03d}", start=start, end=start + timedelta(hours=1))
            with write_session(engine) as s:
                service.create_once(s, principals[i % len(principals)], data, None)

        def trivial(_i: int) -> None:
            with write_session(engine) as s:
                s.execute(text("SELECT 1"))

        def timed(fn, first: int, count: int) -> tuple[list[float], list[float], list[float]]:  # type: ignore[no-untyped-def]
            wall, cpu, stmts = [], [], []
            for b in range(first, first + count, BATCH):
                k = min(BATCH, first + count - b)
                s0, w0, c0 = statements[0], time.perf_counter(), time.process_time()
                for i in range(b, b + k):
                    fn(i)
                wall.append((time.perf_counter() - w0) * 1000 / k)
                cpu.append((time.process_time() - c0) * 1000 / k)
                stmts.append((statements[0] - s0) / k)
            return wall, cpu, stmts

        timed(one_booking, 0, BATCH)  # warm-up
        timed(trivial, 0, BATCH)
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            timed(one_booking, BATCH, n)
            prof.disable()
            stats = pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "cumulative"))
            stats.print_stats(int(os.environ.get("BENCH_TOP", "25")))
            return
        wall, cpu, stmts = timed(one_booking, BATCH, n)
        t_wall, t_cpu, t_stmts = timed(trivial, 0, n)
        med = statistics.median
        print(f"{backend}: {n} bookings in batches of {BATCH}, one thread (machine shared with other work)")
        print(
            f"  booking : {med(stmts):5.1f} statements, {med(wall):6.2f} ms wall, {med(cpu):6.2f} ms CPU per booking "
            f"(median of batches); {1000 / med(wall):6.0f} bookings/s"
        )
        print(
            f"  trivial : {med(t_stmts):5.1f} statements, {med(t_wall):6.2f} ms wall, {med(t_cpu):6.2f} ms CPU "
            f"per unit of work; {1000 / med(t_wall):6.0f} /s; booking/trivial rate {med(t_wall) / med(wall):.0%}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--bookings", type=int, default=600)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        run(backend, args.bookings, args.profile)


if __name__ == "__main__":
    main()
