"""Simulated esp-rfid controllers in their own process, for the access benchmarks.

    .venv/bin/python -m bench.esprfid_fleet --mqtt-url mqtt://127.0.0.1:1883 --prefix P --count 1000

Real controllers are separate machines: running the fleet (hub mode, one MQTT connection) in a
process of its own keeps its CPU out of the gateway's GIL, on both the gateway path and the raw
baseline. Every command a device receives is stamped with the wall clock (`time.time()`, shared by
the processes of this machine) before the device handles it, so the parent can measure lateness
from a transition's due time to the controller's receipt.

The parent drives it with one line per request on stdin and reads one JSON line per answer on
stdout: `reset` (forget cards and receipts), `dump PATH` (write every device's cards and receipts
to PATH as JSON), `quit`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from drivers.esprfid.connection import MqttSettings
from drivers.esprfid.simulator import SimulatedController, SimulatorFleet, build_configs


def _stamp(device: SimulatedController, receipts: list[tuple[float, bytes]]) -> None:
    """Record the receipt time of every command before the device handles it (an instance wrapper:
    the simulator itself is left as it is)."""
    handle = device.handle_command

    def stamped(payload: bytes) -> None:
        receipts.append((time.time(), payload))
        handle(payload)

    device.handle_command = stamped  # type: ignore[method-assign]


def _dump(fleet: SimulatorFleet, receipts: dict[str, list[tuple[float, bytes]]], path: str) -> None:
    out = {}
    for device in fleet.devices:
        with device._lock:
            users = {uid: [rec.validsince, rec.validuntil, rec.acctype(1)] for uid, rec in sorted(device.users.items())}
        got = []
        for t, payload in list(receipts[device.topic]):
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            got.append([t, data.get("cmd"), data.get("uid")])
        out[device.topic] = {"ip": device.config.ip, "users": users, "receipts": got}
    with open(path, "w") as f:
        json.dump(out, f)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--heartbeat", type=float, default=180.0, help="seconds (the firmware's default)")
    args = p.parse_args()
    configs = build_configs(count=args.count, prefix=args.prefix, heartbeat_interval=args.heartbeat)
    fleet = SimulatorFleet(MqttSettings.from_url(args.mqtt_url), configs, mode="hub", wildcard=args.prefix)
    receipts: dict[str, list[tuple[float, bytes]]] = {}
    for device in fleet.devices:
        receipts[device.topic] = []
        _stamp(device, receipts[device.topic])
    fleet.start()

    def answer(**kw: object) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    try:
        if not fleet.wait_ready(30):
            answer(ready=False)
            return
        answer(ready=True, devices=len(fleet.devices))
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb == "reset":
                for device in fleet.devices:
                    with device._lock:
                        device.files.clear()
                    receipts[device.topic].clear()
                answer(ok=True)
            elif verb == "dump":
                _dump(fleet, receipts, arg)
                answer(ok=True)
            elif verb == "quit":
                break
            else:
                answer(ok=False, error=f"unknown request {verb!r}")
    finally:
        fleet.stop()
        answer(stopped=True)


if __name__ == "__main__":
    main()
