"""A quiet day: single grants, one at a time, through the running clock; lateness from each
transition's due time to the simulated controller's receipt of its command.

    .venv/bin/python -m bench.access_quiet [--backend sqlite|postgresql|both] [--transitions 200]
        [--controllers 1000] [--mqtt-url mqtt://127.0.0.1:1883]

Target (issue): p99 lateness <= 50 ms.

Same site and fleet as `bench.access_burst` (1,000 esp-rfid controllers simulated in a process of
their own). The gateway side is what the server runs: the driver host (`start_drivers`) and the
clock (`start_clock` with the host's `send_many`, the settings' default 1 s safety-net interval).
Every 0.2-0.3 s one booking's window is written by `set_windows` in its own transaction, with the
window starting PRELOAD + 0.5 s ahead, so its grant falls due 0.5 s after the commit; the commit's
after_commit hook moves the clock's wake-up to that due time.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from access.models import Transition
from access.transitions import PRELOAD
from access.windows import set_windows
from bench import access_rig as rig
from bench.common import fresh_database, percentile
from core.db import read_session, write_session
from schedules.clock import start_clock

LEAD = 0.5  # seconds from the commit to the due time


def stats_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {statistics.median(ms):.1f} ms, p95 {percentile(ms, 95):.1f} ms, "
        f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )


def run(backend: str, url: str, n_ctl: int, n_tr: int, seed: int = 5) -> None:
    tally = rig.install_tally()
    gc.unfreeze()
    rng = random.Random(seed)
    with fresh_database(backend, Path("var/bench")) as (_db, engine):
        prefix = rig.new_prefix()
        site = rig.populate_site(engine, n_ctl, prefix)
        holders = rig.add_badge_holders(engine, n_tr)
        with rig.fleet(url, prefix, n_ctl) as fleet:
            host, storm_s, degraded = rig.start_host(engine, url, n_ctl)
            sent: dict[str, float] = {}  # card -> when the dispatcher handed its command to the driver

            def send_many(pairs):  # type: ignore[no-untyped-def]
                now = time.time()
                for _key, command in pairs:
                    sent[command.credential_uid] = now
                return host.send_many(pairs)

            gc.collect()
            gc.freeze()  # as the server does after start-up
            clock = start_clock(engine, send_many=send_many)
            dues: list[tuple[str, str, float]] = []  # (topic, card, due)
            try:
                with rig.phase_timer() as phases:
                    time.sleep(1.0)  # the clock's first runs (expiries, no-shows, an empty dispatch)
                    for i, (user_id, _cred, uid) in enumerate(holders):
                        room = rng.randrange(n_ctl)
                        due = datetime.now(UTC) + timedelta(seconds=LEAD)
                        start = due + PRELOAD
                        with write_session(engine) as s:
                            set_windows(
                                s,
                                "reservation",
                                i + 1,
                                site.resource_ids[room],
                                [user_id],
                                start,
                                start + timedelta(hours=1),
                                "badge",
                                active=True,
                            )
                        dues.append((site.topics[room], uid, due.timestamp()))
                        time.sleep(rng.uniform(0.2, 0.3))
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        with read_session(engine) as s:
                            done = s.exec(
                                select(func.count())
                                .select_from(Transition)
                                .where(Transition.action == "grant", Transition.status == "done")
                            ).scalar_one()
                        if done >= n_tr:
                            break
                        time.sleep(0.1)
            finally:
                clock.shutdown()
                host.stop()
            dump = fleet.dump()

        receipts = rig.first_receipts(dump, "adduser", 0)
        late = [receipts[(topic, uid)] - due for topic, uid, due in dues if (topic, uid) in receipts]
        # Per transition: when a dispatcher run claimed it, and when its command went to the driver.
        uid_of = {cred: uid for _u, cred, uid in holders}
        claimed = {uid_of[d.credential_id]: c.began for c in phases["claim_due"] if c.size > 0 for d in c.result}
        claims = [c for c in phases["claim_due"] if c.size > 0]
        woke = [claimed[uid] - due for _t, uid, due in dues if uid in claimed]
        commands = [c.seconds for c in phases["commands_for"]]
        to_send = [sent[uid] - due for _t, uid, due in dues if uid in sent]
        in_flight = [receipts[(topic, uid)] - sent[uid] for topic, uid, _d in dues if (topic, uid) in receipts]
        worst = sorted(
            ((receipts.get((topic, uid), float("inf")) - due, uid, due) for topic, uid, due in dues), reverse=True
        )[:3]
        wrong = sum(
            1
            for topic, uid, due in dues
            if dump[topic]["users"].get(uid, [None])[0] != int(due + PRELOAD.total_seconds())
        )
        print(
            f"{backend}: {n_tr} single grants, one every 0.2-0.3 s, through the running clock, "
            f"{n_ctl:,} esp-rfid controllers (re-sync storm at start {storm_s:.0f} s, {degraded} left degraded)"
        )
        print(f"  lateness due -> controller receipt: {stats_ms(late)}   target p99 <= 50 ms")
        print(f"    due -> dispatcher claims:         {stats_ms(woke)} (the clock's exact wake-up)")
        print(
            f"    claim (write txn):                {stats_ms([c.seconds for c in claims])}; "
            f"commands_for: {stats_ms(commands)}"
        )
        print(f"    due -> send_many called:          {stats_ms(to_send)}")
        print(f"    send_many -> receipt:             {stats_ms(in_flight)} (driver, broker, device)")
        print(
            f"  received {len(late)}/{n_tr}; cards missing or with a wrong window: {wrong}; "
            f"dispatcher runs that claimed nothing: {sum(1 for c in phases['claim_due'] if c.size == 0)}"
        )
        for lateness, uid, due in worst:
            print(
                f"  late: {lateness * 1000:.0f} ms = claimed +{(claimed.get(uid, due) - due) * 1000:.0f} ms, "
                f"sent +{(sent.get(uid, due) - due) * 1000:.0f} ms"
            )
        for line in tally.report():
            print(f"  log: {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--controllers", type=int, default=1000)
    p.add_argument("--transitions", type=int, default=200)
    p.add_argument("--mqtt-url", default=rig.MQTT_URL)
    args = p.parse_args()
    if not rig.mqtt_reachable(args.mqtt_url):
        raise SystemExit(f"no MQTT broker at {args.mqtt_url}")
    for backend in rig.backends(args.backend):
        run(backend, args.mqtt_url, args.controllers, args.transitions)


if __name__ == "__main__":
    main()
