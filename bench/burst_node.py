"""A second gateway node for `bench.access_burst --nodes 2`: its own process, engine and esp-rfid
driver host on the same database and broker, dispatching the same burst beside the first node
(the claims' leases and SKIP LOCKED share the rows out between the two).

    python -m bench.burst_node DATABASE_URL MQTT_URL CONTROLLERS PIPELINE

Talks to its parent on stdin and stdout, one line each way at a time: it prints `ready <storm
seconds>` once its driver host has re-synced the controllers, reads the due time (a Unix
timestamp), runs `dispatch_once` at that time as the clock would, and prints one JSON line: how
many transitions it settled, its CPU time, its batches and when it was done; it stops at the
next line (or the end of its input).
"""

from __future__ import annotations

import gc
import json
import sys
import time

import schedules.dispatch as dispatch
from bench import access_rig as rig
from core.db import make_engine


def main() -> None:
    url, mqtt_url, n_ctl, pipeline = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    engine = make_engine(url)
    host, storm_s, _degraded = rig.start_host(engine, mqtt_url, n_ctl)
    try:
        print(f"ready {storm_s:.1f}", flush=True)
        due = float(sys.stdin.readline())
        batches: list[int] = []

        def send_many(pairs):  # type: ignore[no-untyped-def]
            batches.append(len(pairs))
            return host.send_many(pairs)

        gc.collect()
        gc.freeze()  # as the server does after start-up
        time.sleep(max(0.0, due - time.time()))
        cpu = time.process_time()
        settled = dispatch.dispatch_once(engine, send_many=send_many, pipeline=pipeline)
        done_at = time.time()
        cpu = time.process_time() - cpu
        print(json.dumps({"settled": settled, "cpu": cpu, "batches": batches, "done_at": done_at}), flush=True)
        sys.stdin.readline()  # the parent has read the CPU figures of this process and its connections
    finally:
        host.stop()
        engine.dispose()


if __name__ == "__main__":
    main()
