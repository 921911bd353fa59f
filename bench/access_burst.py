"""A burst of grants: 5,000 transitions due in the same second for 1,000 esp-rfid controllers,
beside the raw paho -> Mosquitto round-trip rate to the same simulated devices in the same run.

    .venv/bin/python -m bench.access_burst [--backend sqlite|postgresql|both] [--controllers 1000]
        [--transitions 5000] [--mqtt-url mqtt://127.0.0.1:1883] [--pipeline 2]

Targets (issue): gateway rate >= 50 % of the raw rate, p99 lateness <= 1 s, nothing lost.

The controllers are `drivers.esprfid.simulator` devices in hub mode, in a process of their own
(`bench.esprfid_fleet`), on a topic prefix of their own; retained messages are cleared afterwards.
The site (rooms, controllers, doors) is imported as a site file; each transition is a booking's
grant written by `access.windows.set_windows` (window start = T + PRELOAD, so the grant falls due
at T), round robin over the rooms; the gateway path is `schedules.dispatch.dispatch_once` with the
driver host's `send_many`, called at T, as the clock's job calls it. Lateness runs from T to the
wall-clock time the simulated controller received the command.

The raw baseline is a plain paho client publishing the same number of `adduser` commands (QoS 0,
as the driver publishes) to the same devices, one in flight per device, the next one sent from the
acknowledgement's callback: what the broker and the simulated devices can do with no gateway.
It runs 3 timed rounds before the gateway's burst and 3 after it; the ratio uses the median of
the six (the load of a shared machine moves during a run).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

import schedules.dispatch as dispatch
from access.models import Transition
from access.transitions import PRELOAD
from access.windows import set_windows
from bench import access_rig as rig
from bench.common import fresh_database, percentile
from config import Settings
from core.db import read_session, write_session
from drivers.esprfid import codec
from drivers.esprfid.connection import MqttSettings
from drivers.esprfid.simulator import benchmark_ip

WINDOW = timedelta(hours=1)
RAW_REPEATS = 3
# CPU time of this process per command (all threads), raw rounds and the gateway's burst: unlike
# the rates, it hardly moves with the load of the machine.
CPU: dict[str, list[float]] = {}


# --------------------------------------------------------------------------- raw baseline


def raw_round_trips(
    url: str, prefix: str, devices: int, per_device: int, repeats: int, tag: str = "RAW"
) -> list[tuple[str, float, float]]:
    """Plain paho: `per_device` adduser commands to each device, one in flight per device, after an
    untimed round of one command each; `repeats` timed rounds.

    Returns, per round, (card uid prefix, start wall time, seconds until the last acknowledgement)."""
    settings = MqttSettings.from_url(url)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bgbench-raw-{secrets.token_hex(3)}",
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    client.max_queued_messages_set(0)
    index_of_ip = {benchmark_ip(d): d for d in range(devices)}
    topics = [f"{rig.device_topic(prefix, d)}/{codec.CMD}" for d in range(devices)]
    lock = threading.Lock()
    subscribed, finished = threading.Event(), threading.Event()
    state: dict = {}

    def plan(round_tag: str, count: int) -> None:
        state["queue"] = [
            [
                codec.dumps(
                    codec.adduser(
                        benchmark_ip(d),
                        codec.UserRecord(f"{round_tag}{d:04d}{k}", f"raw {d}", {1: codec.ACC_ALWAYS}, 0, 2**31 - 1),
                    )
                )
                for k in range(count)
            ]
            for d in range(devices)
        ]
        state["next"] = [0] * devices
        state["left"] = devices * count
        finished.clear()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        if data.get("type") != "adduser":
            return
        d = index_of_ip.get(data.get("ip"))
        if d is None:
            return
        with lock:
            k = state["next"][d]
            state["next"][d] = k + 1
            state["left"] -= 1
            done = state["left"] == 0
        if k + 1 < len(state["queue"][d]):
            c.publish(topics[d], state["queue"][d][k + 1], qos=0)
        if done:
            state["end"] = time.time()
            finished.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/+/{codec.SEND}", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("raw client could not subscribe")
        rounds = []
        for round_tag, count in [("WARM", 1)] + [(f"{tag}{r}", per_device) for r in range(repeats)]:
            plan(round_tag, count)
            start, cpu = time.time(), time.process_time()
            for d in range(devices):
                client.publish(topics[d], state["queue"][d][0], qos=0)
            if not finished.wait(300):
                raise RuntimeError(f"raw baseline: {state['left']} acknowledgements missing")
            rounds.append((round_tag, start, state["end"] - start))
            if round_tag != "WARM":
                CPU.setdefault("raw", []).append((time.process_time() - cpu) / (devices * count))
        return rounds[1:]
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- gateway


def write_windows(engine, site: rig.Site, holders: list[tuple[int, int, str]], due: datetime, batch: int) -> None:  # type: ignore[no-untyped-def]
    """One booking per holder, round robin over the rooms; its grant falls due at `due`."""
    start = due + PRELOAD
    for lo in range(0, len(holders), batch):
        with write_session(engine) as s:
            for i in range(lo, min(len(holders), lo + batch)):
                user_id = holders[i][0]
                room = i % len(site.resource_ids)
                set_windows(
                    s,
                    "reservation",
                    i + 1,
                    site.resource_ids[room],
                    [user_id],
                    start,
                    start + WINDOW,
                    "badge",
                    active=True,
                )


def _second_node(db_url: str, url: str, n_ctl: int, pipeline: int, log: Path) -> tuple[subprocess.Popen, float]:
    """`bench.burst_node` started and its driver host re-synced; returns it and its storm's seconds."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.burst_node", db_url, url, str(n_ctl), str(pipeline)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    if not line or line[0] != "ready":
        child.kill()
        raise RuntimeError(f"the second node did not start: see {log}")
    return child, float(line[1])


def run(backend: str, url: str, n_ctl: int, n_tr: int, lead: float | None, pipeline: int = 2, nodes: int = 1) -> None:
    tally = rig.install_tally()
    CPU.clear()
    gc.unfreeze()
    per_device = math.ceil(n_tr / n_ctl)
    second: subprocess.Popen | None = None
    second_out: dict = {}
    with fresh_database(backend, Path("var/bench")) as (db_url, engine):
        prefix = rig.new_prefix()
        t = time.perf_counter()
        site = rig.populate_site(engine, n_ctl, prefix)
        holders = rig.add_badge_holders(engine, n_tr)
        setup_s = time.perf_counter() - t
        with rig.fleet(url, prefix, n_ctl) as fleet:
            load_before = os.getloadavg()[0]
            rounds = raw_round_trips(url, prefix, n_ctl, per_device, RAW_REPEATS)
            tag, raw_start, raw_s = sorted(rounds, key=lambda r: r[2])[len(rounds) // 2]  # the median round
            raw_late = [
                t - raw_start
                for (_topic, uid), t in rig.first_receipts(fleet.dump(), "adduser", raw_start).items()
                if uid.startswith(tag)
            ]
            fleet.reset()

            host, storm_s, degraded = rig.start_host(engine, url, n_ctl)
            if nodes == 2:
                second, second_storm = _second_node(db_url, url, n_ctl, pipeline, Path("var/bench/burst-node.log"))
                storm_s += second_storm
            try:
                # Calibrate the lead: T must still be ahead once every window is written.
                t = time.perf_counter()
                probe = max(1, n_tr // 50)
                far = datetime.now(UTC) + timedelta(days=30)  # probe rows: grants due in a month, never dispatched
                write_windows(engine, site, holders[:probe], far, probe)
                per_window = (time.perf_counter() - t) / probe
                with write_session(engine) as s:  # the probe's bookings are cancelled: nothing stays pending
                    for i in range(probe):
                        set_windows(
                            s, "reservation", i + 1, site.resource_ids[i % n_ctl], [], far, far, "badge", active=False
                        )
                lead_s = lead if lead is not None else 5 + 1.5 * per_window * n_tr
                due = datetime.fromtimestamp(math.ceil(time.time() + lead_s), UTC)
                t = time.perf_counter()
                write_windows(engine, site, holders, due, 250)
                write_s = time.perf_counter() - t
                ahead = due.timestamp() - time.time()
                if ahead < 0.5:
                    raise RuntimeError(f"windows written {-ahead:.1f} s after their due time: raise --lead")
                with read_session(engine) as s:
                    pending = s.exec(
                        select(func.count())
                        .select_from(Transition)
                        .where(Transition.status == "pending", Transition.due_at <= due)
                    ).scalar_one()
                assert pending == n_tr, (pending, n_tr)

                sends: list[tuple[float, float, int]] = []

                def send_many(pairs):  # type: ignore[no-untyped-def]
                    t0 = time.perf_counter()
                    out = host.send_many(pairs)
                    sends.append((t0, time.perf_counter(), len(pairs)))
                    return out

                if second is not None:
                    assert second.stdin is not None and second.stdout is not None
                    second.stdin.write(f"{due.timestamp()}\n")
                    second.stdin.flush()
                gc.collect()
                gc.freeze()  # as the server does after start-up
                named = {"gateway": [os.getpid()], "fleet": [fleet.proc.pid]}
                if second is not None:
                    named["second node"] = [second.pid]
                shares = rig.CpuShares(named)
                time.sleep(max(0.0, due.timestamp() - time.time()))
                shares.start()
                cpu = time.process_time()
                with rig.phase_timer() as phases:
                    settled = dispatch.dispatch_once(engine, send_many=send_many, pipeline=pipeline)
                CPU["gateway"] = [(time.process_time() - cpu) / max(1, settled)]
                done_at = time.time()
                if second is not None:
                    assert second.stdout is not None
                    second_out = json.loads(second.stdout.readline() or "{}")
                    done_at = max(done_at, second_out["done_at"])
                    settled += second_out["settled"]
                shares.stop()  # before the second node ends, with its database connections
                if second is not None:
                    assert second.stdin is not None
                    second.stdin.write("stop\n")
                    second.stdin.close()
                    second.wait(timeout=60)
                gw_s = done_at - due.timestamp()
                with read_session(engine) as s:
                    by_status = dict(
                        s.exec(
                            select(Transition.status, func.count())
                            .where(Transition.action == "grant", Transition.due_at == due)
                            .group_by(Transition.status)
                        ).all()
                    )
                dump = fleet.dump()
            finally:
                host.stop()
                if second is not None and second.poll() is None:
                    second.kill()
            # the raw rate again after the burst: the load of this shared machine moves between runs
            load_after = os.getloadavg()[0]
            fleet.reset()
            rounds += raw_round_trips(url, prefix, n_ctl, per_device, RAW_REPEATS, tag="RAWB")
            raw_s = statistics.median(r[2] for r in rounds)

        # Figures -----------------------------------------------------------------------------
        expected: dict[str, dict[str, list[int]]] = defaultdict(dict)
        since, until = int(due.timestamp() + PRELOAD.total_seconds()), int((due + PRELOAD + WINDOW).timestamp())
        for i, (_u, _c, uid) in enumerate(holders):
            expected[site.topics[i % n_ctl]][uid] = [since, until, 1]
        wrong = sum(1 for topic in site.topics if dump[topic]["users"] != expected[topic])
        receipts = rig.first_receipts(dump, "adduser", due.timestamp() - 1)
        late = [
            receipts[(topic, uid)] - due.timestamp()
            for topic in expected
            for uid in expected[topic]
            if (topic, uid) in receipts
        ]
        repeats = sum(1 for dev in dump.values() for _t, c, _u in dev["receipts"] if c == "adduser") - len(receipts)
        raw_rate = n_ctl * per_device / raw_s
        gw_rate = n_tr / gw_s
        send_s = sum(b - a for a, b, _ in sends)
        print(
            f"{backend}: {n_tr:,} grants due at the same second on {n_ctl:,} esp-rfid controllers "
            f"(site + holders {setup_s:.0f} s, windows written in {write_s:.1f} s, "
            f"re-sync storm at driver start {storm_s:.1f} s, {degraded} controller(s) left degraded by it; "
            f"load average {load_before:.1f} before, {load_after:.1f} after the burst)"
        )
        print(
            f"  raw paho -> Mosquitto, one in flight per device: {n_ctl * per_device:,} acks in {raw_s:.2f} s = "
            f"{raw_rate:,.0f}/s (median of {len(rounds)} rounds, {RAW_REPEATS} before and {RAW_REPEATS} after the "
            f"burst: {', '.join(f'{n_ctl * per_device / r[2]:,.0f}' for r in rounds)}/s); "
            f"start -> receipt (median round before) p50 {statistics.median(raw_late) * 1000:.0f} ms, "
            f"p99 {percentile(raw_late, 99) * 1000:.0f} ms"
        )
        raw_cpu = statistics.median(CPU["raw"])
        print(
            f"  CPU of this process per command: raw client {raw_cpu * 1e6:.0f} us (median round), "
            f"gateway {CPU['gateway'][0] * 1e6:.0f} us (dispatcher, database, driver) = "
            f"{CPU['gateway'][0] / raw_cpu:.1f}x"
        )
        if second_out:
            mine = n_tr - second_out["settled"]
            print(
                f"  two nodes: this one settled {mine:,} in {len(sends)} batches, the second "
                f"{second_out['settled']:,} in {len(second_out['batches'])} batches at "
                f"{second_out['cpu'] / max(1, second_out['settled']) * 1e6:.0f} us of its CPU per command"
            )
        print(
            f"  gateway (dispatch_once + driver): all {settled:,} settled {gw_s:.2f} s after due = {gw_rate:,.0f}/s; "
            f"ratio gateway/raw {gw_rate / raw_rate:.0%} (target >= 50%; {pipeline} batch(es) in flight at once"
            f"{', two nodes' if nodes == 2 else ''})"
        )
        print(
            f"  lateness due -> controller receipt: p50 {statistics.median(late) * 1000:.0f} ms, "
            f"p99 {percentile(late, 99) * 1000:.0f} ms, max {max(late) * 1000:.0f} ms (target p99 <= 1000 ms)"
        )
        print(
            f"  nothing lost: rows {by_status} (want done={n_tr:,}); commands received {len(late):,}/{n_tr:,}, "
            f"repeated {repeats}; devices holding other than their {per_device} cards: {wrong}"
        )
        print(
            f"  where the time goes: {len(sends)} batches; claim {rig.seconds(phases['claim_due']):.2f} s, "
            f"commands {rig.seconds(phases['commands_for']):.2f} s, send+ack {send_s:.2f} s "
            f"(batch median {statistics.median(b - a for a, b, _ in sends) * 1000:.0f} ms), "
            f"finish {rig.seconds(phases['_finish']):.2f} s"
        )
        print(f"  CPU seconds during the burst: {shares.report()}")
        for line in tally.report():
            print(f"  log: {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--controllers", type=int, default=1000)
    p.add_argument("--transitions", type=int, default=5000)
    p.add_argument("--mqtt-url", default=rig.MQTT_URL)
    server = Settings.model_fields["dispatch_pipeline"].default
    p.add_argument(
        "--pipeline", type=int, default=server, help=f"batches in flight at once (the server's default: {server})"
    )
    p.add_argument("--lead", type=float, help="seconds between planning and the due time (default: measured)")
    p.add_argument(
        "--nodes", type=int, choices=[1, 2], default=1, help="2: a second gateway process dispatches beside this one"
    )
    args = p.parse_args()
    if not rig.mqtt_reachable(args.mqtt_url):
        raise SystemExit(f"no MQTT broker at {args.mqtt_url}")
    for backend in rig.backends(args.backend):
        run(backend, args.mqtt_url, args.controllers, args.transitions, args.lead, args.pipeline, args.nodes)


if __name__ == "__main__":
    main()
