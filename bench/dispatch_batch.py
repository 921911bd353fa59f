"""The dispatcher's own database work for a burst, without a broker: 5,000 grants due at once on
1,000 controllers (the burst of `bench.access_burst`), claimed, turned into commands and settled
as done in batches of 500, as `dispatch_once` does, with every send answered at once.

    .venv/bin/python -m bench.dispatch_batch [--backend sqlite|postgresql|both] [--rounds 7]

What it isolates: in the burst, this work shares the interpreter with the MQTT client's thread,
so each microsecond of it is one the acknowledgements wait for. The baseline measured in the same
run is a plain read of the same 500 transitions' columns, one statement per batch: the least a
claim can cost. Each round writes the grants again as fresh pending rows (outside the timing), as
planning does; figures are medians over the rounds of the per-batch wall time and this process's
CPU per command.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, select

import schedules.dispatch as dispatch
from access.models import Transition
from access.protocol import CommandResult
from bench import access_rig as rig
from bench.access_burst import write_windows
from bench.common import fresh_database
from core.db import read_session, write_session

BATCH = 500


_COLUMNS = ("controller_id", "door_id", "credential_id", "action", "due_at", "source")


def _planned(engine) -> list[dict]:  # type: ignore[no-untyped-def]
    """The grants as the planner wrote them (each round writes them again)."""
    with read_session(engine) as s:
        rows = s.connection().execute(
            select(*(getattr(Transition, c) for c in _COLUMNS)).where(Transition.action == "grant")  # type: ignore[arg-type]
        )
        return [dict(zip(_COLUMNS, r, strict=True)) for r in rows]


def _reset(engine, planned: list[dict]) -> None:  # type: ignore[no-untyped-def]
    """Fresh pending rows, as planning writes them: rows set back to pending by an update would
    sit on pages the earlier rounds rewrote, which is not what a dispatcher meets."""
    with write_session(engine) as s:
        s.exec(delete(Transition))
        s.connection().execute(insert(Transition), planned)
    if engine.dialect.name == "postgresql":  # what autovacuum does between real bursts
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE transition")


def run(backend: str, n_ctl: int, n_tr: int, rounds: int) -> None:
    with fresh_database(backend, Path("var/bench")) as (_db, engine):
        site = rig.populate_site(engine, n_ctl, rig.new_prefix())
        holders = rig.add_badge_holders(engine, n_tr)
        due = datetime.now(UTC) - timedelta(seconds=5)
        write_windows(engine, site, holders, due, 250)
        written = _planned(engine)
        gc.freeze()  # as the server does after start-up: the collector then skips the long-lived heap
        phases: dict[str, list[float]] = {"baseline": [], "claim": [], "commands": [], "finish": []}
        cpu: dict[str, list[float]] = {"baseline": [], "dispatcher": []}
        for round_no in range(rounds + 1):  # round 0 warms the caches and is not counted
            _reset(engine, written)
            # the baseline: read the same rows' columns, one statement per batch of 500
            c0, took = time.process_time(), []
            for lo in range(0, n_tr, BATCH):
                t = time.perf_counter()
                with read_session(engine) as s:
                    s.connection().execute(
                        select(
                            Transition.id,  # type: ignore[call-overload]
                            Transition.controller_id,
                            Transition.door_id,
                            Transition.credential_id,
                            Transition.action,
                            Transition.attempts,
                        )
                        .where(Transition.status == "pending")
                        .order_by(Transition.due_at, Transition.id)
                        .offset(lo)
                        .limit(BATCH)
                    ).all()
                took.append(time.perf_counter() - t)
            base_cpu = (time.process_time() - c0) / n_tr
            # the dispatcher's work, batch after batch, every command acknowledged
            c0, claims, commands, finishes, settled = time.process_time(), [], [], [], 0
            worker = "bench-batch"
            while True:
                at = datetime.now(UTC)
                t = time.perf_counter()
                batch = dispatch.claim_due(engine, worker, at, limit=BATCH)
                t1 = time.perf_counter()
                if not batch:
                    break
                planned = dispatch._plan(engine, batch, at)
                t2 = time.perf_counter()
                results = [CommandResult(command.command_id, True, "bench", 1) for _key, command in planned.pairs]
                outcomes = dispatch._outcomes(planned, results)
                dispatch._finish(engine, worker, outcomes, at)
                t3 = time.perf_counter()
                settled += len(outcomes)
                claims.append(t1 - t)
                commands.append(t2 - t1)
                finishes.append(t3 - t2)
            assert settled == n_tr, (settled, n_tr)
            cpu_per = (time.process_time() - c0) / n_tr
            if round_no == 0:
                continue
            phases["baseline"].append(statistics.median(took))
            phases["claim"].append(statistics.median(claims))
            phases["commands"].append(statistics.median(commands))
            phases["finish"].append(statistics.median(finishes))
            cpu["baseline"].append(base_cpu)
            cpu["dispatcher"].append(cpu_per)
        with read_session(engine) as s:
            done = s.exec(select(func.count()).select_from(Transition).where(Transition.status == "done")).scalar_one()
        assert done == n_tr, (done, n_tr)
        med = {k: statistics.median(v) * 1000 for k, v in phases.items()}
        total = med["claim"] + med["commands"] + med["finish"]
        print(f"{backend}: {n_tr:,} grants due on {n_ctl:,} controllers, batches of {BATCH}, median of {rounds} rounds")
        print(
            f"  per batch: claim {med['claim']:.1f} ms, commands {med['commands']:.1f} ms, "
            f"finish {med['finish']:.1f} ms = {total:.1f} ms; baseline (read the batch's rows) "
            f"{med['baseline']:.1f} ms = {total / med['baseline']:.1f}x"
        )
        d, b = statistics.median(cpu["dispatcher"]) * 1e6, statistics.median(cpu["baseline"]) * 1e6
        print(f"  CPU per command: dispatcher {d:.0f} us, baseline {b:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    parser.add_argument("--controllers", type=int, default=1000)
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for backend in rig.backends(args.backend):
        t = time.perf_counter()
        run(backend, args.controllers, args.transitions, args.rounds)
        print(f"  ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
