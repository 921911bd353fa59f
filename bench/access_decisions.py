"""Online decisions with 100,000 live grants: `DecisionIndex.decide` latency, checked against the
pure reference `access.desired.may_enter`, and the gateway's memory with the grants loaded.

    .venv/bin/python -m bench.access_decisions [--backend sqlite|postgresql|both] [--grants 100000]
        [--queries 200000]

Targets (issue): decisions answered from memory (p99 reported); gateway RSS <= 300 MB.

The site is 1,000 rooms with a door each on 1,000 esp-rfid controllers, imported as a site file;
100,000 people with a badge each (1 % of the badges expired); the windows are written by
`access.windows.set_windows`, 1,000 bookings of 100 beneficiaries each (one per room), all under
way now, in the modes authorized / badge+authorized / badge (2:1:1), so transitions are planned as
production plans them. The queries are a fixed mix: 50 % a holder at their own door now (allowed),
15 % a holder at another room's door, 15 % an unknown card, 10 % a holder at their door an hour
after their window, 10 % an expired badge.

Memory: a fresh interpreter builds the app (`bookgate.app.create_app`) on that database and runs
its lifespan as the server does (migrations, the decision index's load, the clock, and the esp-rfid
driver for the 1,000 controllers when the broker is reachable); VmRSS from /proc before the
lifespan starts is the baseline, VmRSS and VmHWM once it has started are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import json
import random
import secrets
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from access.decisions import DecisionIndex
from access.desired import may_enter
from access.models import Credential, Transition
from access.service import state_for_doors
from access.windows import set_windows
from bench import access_rig as rig
from bench.common import fresh_database, percentile
from core.db import read_session, write_session

ROOMS = 1000
DRIVER = ", esp-rfid driver for 1,000 controllers"
MODES = ("authorized", "badge+authorized", "authorized", "badge")


def vm(field: str) -> int:
    """A /proc/self/status figure in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# --------------------------------------------------------------------------- the gateway process


def probe(database_url: str, mqtt_url: str) -> None:
    """Run in a fresh interpreter: the app's RSS before and after its lifespan has started."""
    from bookgate.app import create_app
    from config import Settings

    faulthandler.dump_traceback_later(300, exit=True)  # never hang the parent

    settings = Settings(  # type: ignore[call-arg]
        database_url=database_url,
        var_dir=Path("var/bench"),
        mqtt_url=mqtt_url,
        secret_key=secrets.token_urlsafe(32),
        _env_file=None,
    )
    app = create_app(settings)
    gc.collect()
    before = vm("VmRSS")
    out: dict = {"rss_before_kb": before}

    async def lifespan() -> None:
        t = time.perf_counter()
        async with app.router.lifespan_context(app):
            out["startup_s"] = time.perf_counter() - t
            gc.collect()
            out["rss_after_kb"] = vm("VmRSS")
            out["hwm_kb"] = vm("VmHWM")
            out["index"] = app.state.decisions.size()
            out["driver"] = app.state.driver_host is not None
            # The lifespan freezes the heap before the index is loaded: what a full collection
            # costs with the index left in the collected generations, and once it is frozen too.
            t = time.perf_counter()
            gc.collect()
            out["full_gc_ms"] = (time.perf_counter() - t) * 1000
            gc.freeze()
            t = time.perf_counter()
            gc.collect()
            out["full_gc_frozen_ms"] = (time.perf_counter() - t) * 1000

    asyncio.run(lifespan())
    print(json.dumps(out))


def measure_gateway(database_url: str, mqtt_url: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.access_decisions", "--probe", database_url, "--probe-mqtt", mqtt_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- data


def populate(engine, grants: int, now: datetime) -> tuple[rig.Site, list[tuple[int, int, str]], dict]:  # type: ignore[no-untyped-def]
    """Returns the site, the holders, and per holder index its window (room, start, end)."""
    site = rig.populate_site(engine, ROOMS, rig.new_prefix())
    holders = rig.add_badge_holders(engine, grants)
    per = grants // ROOMS
    windows: dict[int, tuple[int, datetime, datetime]] = {}
    rng = random.Random(3)
    for room in range(ROOMS):
        start = now - timedelta(minutes=rng.randrange(10, 120))
        end = now + timedelta(minutes=rng.randrange(60, 600))
        members = list(range(room * per, (room + 1) * per))
        with write_session(engine) as s:
            set_windows(
                s,
                "reservation",
                room + 1,
                site.resource_ids[room],
                [holders[i][0] for i in members],
                start,
                end,
                MODES[room % len(MODES)],
                active=True,
            )
        for i in members:
            windows[i] = (room, start, end)
    expired = [i for i in range(grants) if i % 100 == 7]
    with engine.begin() as conn:
        conn.execute(
            update(Credential)
            .where(Credential.id.in_([holders[i][1] for i in expired]))  # type: ignore[attr-defined]
            .values(valid_until=now - timedelta(days=1))
        )
    return site, holders, {"windows": windows, "expired": set(expired)}


def queries(site: rig.Site, holders, info: dict, n: int, now: datetime, seed: int = 9) -> list[tuple]:  # type: ignore[no-untyped-def]
    """(door_id, card, at, expected allowed, holder index or None)."""
    rng = random.Random(seed)
    windows, expired = info["windows"], info["expired"]
    valid = [i for i in range(len(holders)) if i not in expired]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.50:
            i = rng.choice(valid)
            out.append((site.door_ids[windows[i][0]], holders[i][2], now, True, i))
        elif r < 0.65:
            i = rng.choice(valid)
            other = (windows[i][0] + rng.randrange(1, ROOMS)) % ROOMS
            out.append((site.door_ids[other], holders[i][2], now, False, i))
        elif r < 0.80:
            out.append((rng.choice(site.door_ids), f"{rng.getrandbits(32) | 0x1:08X}Z", now, False, None))
        elif r < 0.90:
            i = rng.choice(valid)
            out.append((site.door_ids[windows[i][0]], holders[i][2], windows[i][2] + timedelta(hours=1), False, i))
        else:
            i = rng.choice(sorted(expired))
            out.append((site.door_ids[windows[i][0]], holders[i][2], now, False, i))
    return out


# --------------------------------------------------------------------------- the run


def run(backend: str, grants: int, n_queries: int, spot: int, mqtt_url: str) -> None:
    gc.unfreeze()
    now = datetime.now(UTC).replace(microsecond=0)
    with fresh_database(backend, Path("var/bench")) as (db_url, engine):
        t = time.perf_counter()
        site, holders, info = populate(engine, grants, now)
        populate_s = time.perf_counter() - t

        index = DecisionIndex()
        t = time.perf_counter()
        with read_session(engine) as s:
            index.load(s, now)
        load_s = time.perf_counter() - t
        gc.collect()
        gc.freeze()  # as the server does after start-up
        qs = queries(site, holders, info, n_queries, now)
        decide = index.decide
        for door, card, at, _e, _i in qs[:1000]:  # warm-up
            decide(door, "badge", card, at)
        lat_ns: list[int] = []
        wrong = 0
        clock = time.perf_counter_ns
        for door, card, at, expected, _i in qs:
            t0 = clock()
            d = decide(door, "badge", card, at)
            lat_ns.append(clock() - t0)
            wrong += d.allowed != expected
        t = time.perf_counter()
        for door, card, at, _e, _i in qs:
            decide(door, "badge", card, at)
        rate = len(qs) / (time.perf_counter() - t)

        # The reference: the pure desired state of the door, from the database, and may_enter.
        rng = random.Random(4)
        sample = rng.sample(qs, spot)
        cred_of = {uid: cred for _u, cred, uid in holders}
        disagree = 0
        ref_ms = []
        with read_session(engine) as s:
            for door, card, at, _e, _i in sample:
                t0 = time.perf_counter()
                state = state_for_doors(s, [door], at)
                ref = card in cred_of and may_enter(state, door, cred_of[card], at)
                ref_ms.append((time.perf_counter() - t0) * 1000)
                disagree += ref != decide(door, "badge", card, at).allowed
        gc.unfreeze()

        # What the index itself keeps, and what loading it allocates on the way (ORM rows).
        tracemalloc.start()
        again = DecisionIndex()
        with read_session(engine) as s:
            again.load(s, now)
        gc.collect()
        held, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del again

        # Steady state for the gateway process: the grants were pushed long ago (the controllers
        # are not simulated here, and a dispatcher retrying 100,000 grants against absent devices
        # is another benchmark). The revokes, due at the windows' ends, stay pending.
        with engine.begin() as conn:
            conn.execute(
                update(Transition)
                .where(Transition.status == "pending", Transition.due_at <= datetime.now(UTC))  # type: ignore[arg-type]
                .values(status="done", done_at=datetime.now(UTC))
            )
        gateway = measure_gateway(db_url, mqtt_url if rig.mqtt_reachable(mqtt_url) else "")

    us = [v / 1000 for v in lat_ns]
    allowed = sum(1 for q in qs if q[3])
    print(
        f"{backend}: {grants:,} live grants ({index.size()}), written in {populate_s:.0f} s; "
        f"index loaded in {load_s:.2f} s"
    )
    print(
        f"  decide(): {len(qs):,} queries ({allowed / len(qs):.0%} allowed): p50 {statistics.median(us):.2f} us, "
        f"p99 {percentile(us, 99):.2f} us, max {max(us):.0f} us; {rate:,.0f} decisions/s in a loop; "
        f"wrong answers against the construction: {wrong}"
    )
    print(
        f"  reference (state_for_doors from the DB + may_enter) on {spot:,} of them: disagreements {disagree}; "
        f"p50 {statistics.median(ref_ms):.1f} ms, p99 {percentile(ref_ms, 99):.1f} ms per decision"
    )
    before, after, hwm = (gateway[k] / 1024 for k in ("rss_before_kb", "rss_after_kb", "hwm_kb"))
    print(
        f"  gateway process (create_app + lifespan{DRIVER if gateway['driver'] else ''}, start-up "
        f"{gateway['startup_s']:.1f} s): RSS {before:.0f} MB before start-up -> {after:.0f} MB with the index "
        f"loaded (+{after - before:.0f} MB), target <= 300 MB: {'met' if after <= 300 else 'MISSED'}; "
        f"peak during the load (VmHWM) {hwm:.0f} MB: {'within' if hwm <= 300 else 'over'} the target"
    )
    print(
        f"  tracemalloc of one load: the index keeps {held / 2**20:.0f} MB; the load peaks at "
        f"{load_peak / 2**20:.0f} MB (rows are streamed as plain tuples)"
    )
    print(
        f"  a full gc.collect() with the index loaded: {gateway['full_gc_ms']:.0f} ms "
        f"(frozen again after the index loads); {gateway['full_gc_frozen_ms']:.0f} ms once frozen"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--grants", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200_000)
    p.add_argument("--spot-check", type=int, default=1000)
    p.add_argument("--mqtt-url", default=rig.MQTT_URL)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--probe-mqtt", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        probe(args.probe, args.probe_mqtt)
        return
    for backend in rig.backends(args.backend):
        run(backend, args.grants, args.queries, args.spot_check, args.mqtt_url)


if __name__ == "__main__":
    main()
