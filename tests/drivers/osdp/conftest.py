"""An OSDP line for the tests: libosdp's own PeripheralDevices on a pty, the driver on the other end
through pyserial, each PD keyed with its own secure-channel key from a 0600 file."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from access.protocol import Availability, DoorEvent, Presentation, Report, Verdict
from drivers.osdp.driver import OsdpDriver, PdConfig
from drivers.osdp.settings import OsdpSettings
from drivers.osdp.simulator import SimulatedLine, SimulatedPd
from tests.drivers.helpers import wait_until


class Doors:
    """The decisions the gateway's index would give, as a table the test sets: (controller, output,
    kind, value) -> allowed; anything else refused as unknown. Times are checked against windows."""

    def __init__(self) -> None:
        self.allowed: dict[tuple[str, int, str, str], tuple[datetime, datetime]] = {}
        self.asked: list[Presentation] = []

    def allow(self, key: str, output: int, kind: str, value: str, start: datetime, end: datetime) -> None:
        self.allowed[(key, output, kind, value)] = (start, end)

    def __call__(self, p: Presentation) -> Verdict:
        self.asked.append(p)
        window = self.allowed.get((p.controller_key, p.door_output, p.kind, p.value))
        if window is None:
            return Verdict(False, "unknown_credential")
        return Verdict(True, "granted") if window[0] <= p.at < window[1] else Verdict(False, "no_window")


@dataclass
class Rig:
    line: SimulatedLine
    driver: OsdpDriver
    doors: Doors
    keys: dict[int, bytes]
    reports: list[Report] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def events(self, kind: str | None = None, key: str | None = None) -> list[DoorEvent]:
        with self.lock:
            return [
                r
                for r in self.reports
                if isinstance(r, DoorEvent)
                and (kind is None or r.kind == kind)
                and (key is None or r.controller_key == key)
            ]

    def availability(self, key: str) -> list[Availability]:
        with self.lock:
            return [r for r in self.reports if isinstance(r, Availability) and r.controller_key == key]

    def online(self, key: str, timeout: float = 8.0) -> bool:
        return wait_until(lambda: self.driver.state(key)[0] == "online", timeout)


def key_file(tmp_path, name: str, key: bytes) -> str:
    path = tmp_path / f"{name}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return str(path)


def make_rig(tmp_path, pds: list[SimulatedPd], settings: dict[int, dict], *, decide=None) -> Rig:
    line = SimulatedLine(pds).start()
    keys: dict[int, bytes] = {}
    configs = []
    for addr, extra in settings.items():
        sim = next((p for p in pds if p.address == addr), None)
        key = extra.pop("_key", None) or (sim.scbk if sim is not None and sim.scbk else secrets.token_bytes(16))
        keys[addr] = key
        s = OsdpSettings(port=line.port, address=addr, scbk_file=key_file(tmp_path, f"pd{addr}", key), **extra)
        configs.append(PdConfig(f"pd-{addr}", s))
    doors = Doors()
    driver = OsdpDriver(configs, decide if decide is not None else doors)
    rig = Rig(line, driver, doors, keys)

    def collect(report: Report) -> None:
        with rig.lock:
            rig.reports.append(report)

    driver.subscribe(collect)
    driver.start()
    return rig


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def rig_factory(tmp_path) -> Iterator:
    made: list[Rig] = []

    def factory(pds, settings, **kw) -> Rig:
        rig = make_rig(tmp_path, pds, settings, **kw)
        made.append(rig)
        return rig

    yield factory
    for rig in made:
        rig.driver.stop()
        rig.line.close()
        rig.loop.close()
