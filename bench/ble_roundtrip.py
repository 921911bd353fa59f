"""BLE grant write -> lock acknowledgement, through the driver, against an emulated lock.

    .venv/bin/python -m bench.ble_roundtrip [--count 500]

The lock runs in a process of its own (`bookgate sim ble`, two radios), as a real lock is another
device. Two centrals connect to it over HCI-over-TCP, each on its own radio:

* gateway: `BleDriver.send(Grant)` from the caller's event loop: the hand-over to the driver's
  loop, bleak's API over the bumble backend, the record built and tagged, write with response, and
  the wait for the lock's authenticated ack notification, verified;
* raw: bumble's GATT client alone on the same lock, writing a pre-built record with response and
  waiting for the ack notification, with no verification: the floor of the same exchange.

Both are measured in the same run, alternating blocks of 50 so that the machine's noise falls on
both alike. Prints p50/p99 of each and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bumble import gatt
from bumble.device import Device, Peer
from bumble.hci import Address
from bumble.transport import open_transport

from access.protocol import Grant
from bench.common import percentile
from drivers.ble import profile
from drivers.ble.driver import BleDriver, LockConfig

ADDRESS = "D4:36:39:A1:0B:01"


def _free_port_pair() -> int:
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@dataclass
class RawCentral:
    peer: Peer
    acks: asyncio.Queue[bytes]
    records: int  # handles
    status: int


async def _raw_central(adapter: str) -> RawCentral:
    transport = await open_transport(adapter.removeprefix("bumble:"))
    device = Device.with_hci("bench raw", Address("F3:00:00:00:00:99"), transport.source, transport.sink)
    await device.power_on()
    connection = await device.connect(Address(ADDRESS))
    peer = Peer(connection)
    await peer.request_mtu(247)
    await peer.discover_services()
    for service in peer.services:
        await peer.discover_characteristics(service=service)
    records = peer.get_characteristics_by_uuid(gatt.UUID(profile.RECORDS_UUID))[0]
    events = peer.get_characteristics_by_uuid(gatt.UUID(profile.EVENTS_UUID))[0]
    status = peer.get_characteristics_by_uuid(gatt.UUID(profile.STATUS_UUID))[0]
    acks: asyncio.Queue[bytes] = asyncio.Queue()
    await peer.subscribe(events, acks.put_nowait)
    return RawCentral(peer, acks, records.handle, status.handle)


async def run(count: int) -> None:
    key = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "lock.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        port = _free_port_pair()
        cmd = [sys.executable, "-m", "bookgate.cli", "sim", "ble", "--lock", f"{ADDRESS}={key_file}"]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--radios", "2"], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
        )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            adapters = line.split("adapters: ")[1].split()
            await _measure(count, key, adapters)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def _measure(count: int, key: bytes, adapters: list[str]) -> None:
    driver = BleDriver([LockConfig("bench", ADDRESS, key, adapters[0])])
    driver.start()
    deadline = time.monotonic() + 15
    while driver.snapshot("bench").online is not True and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    raw = await _raw_central(adapters[1])
    counter = 0
    start = datetime.now(UTC)
    digest = profile.credential_digest(key, "uid", "04a1b2c3")
    gateway_ms: list[float] = []
    raw_ms: list[float] = []
    failures = 0
    try:
        for _ in range(3):  # warm up both paths
            await driver.send("bench", Grant("warm", 1, "04a1b2c3", "", start, start + timedelta(hours=1)))
        block = 50
        while len(gateway_ms) < count:
            for i in range(block):
                g = Grant(f"g{i}", 1, f"04a1b2{i % 256:02x}", "", start, start + timedelta(hours=1))
                t = time.perf_counter()
                result = await driver.send("bench", g)
                gateway_ms.append((time.perf_counter() - t) * 1000)
                failures += not result.ok
            # the raw central's counter must pass the gateway's: the lock keeps one counter
            counter = max(counter, profile.open_status(key, await raw.peer.read_value(raw.status)))
            for _ in range(block):
                counter += 1
                data = profile.grant_record(key, counter, 1, digest, 0, 2**32 - 1)
                t = time.perf_counter()
                await raw.peer.write_value(raw.records, data, with_response=True)
                await raw.acks.get()
                raw_ms.append((time.perf_counter() - t) * 1000)
    finally:
        driver.stop()
    g50, r50 = percentile(gateway_ms, 50), percentile(raw_ms, 50)
    print(f"BLE grant -> authenticated ack, {len(gateway_ms)} each, lock in its own process, HCI over TCP")
    print(f"  raw bumble GATT write + ack   p50 {r50:.2f} ms  p99 {percentile(raw_ms, 99):.2f} ms")
    print(f"  gateway (BleDriver.send)      p50 {g50:.2f} ms  p99 {percentile(gateway_ms, 99):.2f} ms")
    print(f"  gateway / raw (p50)           {g50 / r50:.2f}x   failed sends: {failures}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=500)
    args = p.parse_args()
    asyncio.run(run(args.count))


if __name__ == "__main__":
    main()
