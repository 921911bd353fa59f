"""Shared plumbing for the driver tests: polling waits and a driver wired to simulated devices."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from access.protocol import Report
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings, RetryPolicy
from drivers.esprfid.connection import make_client
from drivers.esprfid.simulator import DeviceConfig, SimulatedController, SimulatorFleet

T = TypeVar("T")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
FAST_RETRY = RetryPolicy(ack_timeout=0.5, max_attempts=3, backoff_base=0.05, backoff_max=0.2, boot_ack_timeout=0.2)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll instead of sleeping a fixed time: returns as soon as ``predicate()`` is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class DeviceClock:
    """The simulated devices' wall clock, which a test can move (devices judge windows by it)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """A driver and a fleet of simulated devices on one real broker, with one event loop."""

    driver: EsprfidDriver
    fleet: SimulatorFleet
    loop: asyncio.AbstractEventLoop
    reports: list[Report] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def device(self, topic: str) -> SimulatedController:
        return self.fleet[topic]

    def collected(self, kind: type[T]) -> list[T]:
        with self._lock:
            return [r for r in self.reports if isinstance(r, kind)]

    def record(self, report: Report) -> None:
        with self._lock:
            self.reports.append(report)

    def close(self) -> None:
        self.driver.stop()
        self.fleet.stop()
        self.loop.close()
        clear_retained(self.fleet.settings, [f"{d.topic}/avty" for d in self.fleet.devices])


def clear_retained(settings: MqttSettings, topics: Sequence[str]) -> None:
    """Leave the shared broker as we found it: an empty retained payload deletes the retained message."""
    client = make_client(settings, client_id_prefix="bgtest-cleanup")
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        for topic in sorted(set(topics)):
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def make_rig(
    url: str,
    devices: Sequence[DeviceConfig],
    *,
    mode: str = "solo",
    clock: Callable[[], float] = time.time,
    retry: RetryPolicy = FAST_RETRY,
    controllers: Sequence[ControllerConfig] | None = None,
    wildcard: str | None = None,
) -> Rig:
    settings = MqttSettings.from_url(url)
    if controllers is None:
        controllers = [
            ControllerConfig(
                d.hostname, d.topic, d.ip, d.hostname, heartbeat_interval=d.heartbeat_interval, reader=d.reader
            )
            for d in devices
        ]
    driver = EsprfidDriver(settings, controllers, retry=retry)
    fleet = SimulatorFleet(settings, devices, mode=mode, clock=clock, wildcard=wildcard)
    rig = Rig(driver, fleet, asyncio.new_event_loop())
    driver.subscribe(rig.record)
    driver.start()
    if not rig.run(driver.wait_connected(10)):
        rig.close()
        raise AssertionError("driver did not connect to the broker")
    fleet.start()
    if not fleet.wait_ready(10):
        rig.close()
        raise AssertionError("simulated devices did not connect to the broker")
    return rig
