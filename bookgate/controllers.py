"""Wiring the controller drivers into the server: the one place that knows drivers exist.

The esp-rfid driver speaks asyncio on its own event-loop thread; the dispatcher (a scheduler
job, synchronous) hands it commands through `send`, which waits for the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import select

from access.models import Controller
from access.protocol import Availability, Booted, Command, CommandResult, ControllerUnavailable, Heartbeat
from access.supervision import full_sync, set_state
from bookgate.db import read_session, utcnow, write_session
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings

log = logging.getLogger("bookgate.controllers")


@dataclass
class DriverHost:
    driver: EsprfidDriver
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    engine: Engine
    reports: queue.Queue = field(default_factory=queue.Queue)

    def watch(self) -> None:
        """Reports arrive on the network thread; a worker of ours records them and re-syncs."""
        self.driver.subscribe(self.reports.put)
        threading.Thread(target=self._work, name="esprfid-supervision", daemon=True).start()

    def _work(self) -> None:
        while True:
            report = self.reports.get()
            if report is None:
                return
            try:
                self._handle(report)
            except Exception:
                log.exception("handling %s failed", type(report).__name__)

    def _handle(self, report: object) -> None:
        if isinstance(report, Availability):
            with write_session(self.engine) as s:
                set_state(s, report.controller_key, "online" if report.online else "offline", report.at)
            if report.online:
                self.resync(report.controller_key)
        elif isinstance(report, Booted):
            self.resync(report.controller_key)
        elif isinstance(report, Heartbeat):
            with write_session(self.engine) as s:
                set_state(s, report.controller_key, "online", report.at)

    def resync(self, key: str) -> bool:
        """Replace what the controller holds by its full desired state (after a reboot or reconnect)."""
        with read_session(self.engine) as s:
            command = full_sync(s, key, utcnow())
        result = self.send(key, command)
        with write_session(self.engine) as s:
            set_state(s, key, "online" if result.ok else "degraded", utcnow(), synced=result.ok)
        if not result.ok:
            log.warning("re-sync of %s failed: %s", key, result.detail)
        return result.ok

    def send(self, controller_key: str, command: Command) -> CommandResult:
        try:
            future = asyncio.run_coroutine_threadsafe(self.driver.send(controller_key, command), self.loop)
            return future.result(timeout=120)
        except KeyError:
            return CommandResult(command.command_id, False, f"no esp-rfid controller {controller_key!r} configured")
        except ControllerUnavailable as exc:
            return CommandResult(command.command_id, False, str(exc))

    def stop(self) -> None:
        self.reports.put(None)
        self.driver.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def start_esprfid(engine: Engine, mqtt_url: str) -> DriverHost | None:
    """One driver for every active esp-rfid controller in the database; None if there is none."""
    with read_session(engine) as s:
        rows = s.exec(select(Controller).where(Controller.driver == "esprfid", Controller.active)).all()
    configs = [
        ControllerConfig(c.key, str(c.settings["topic"]), str(c.settings.get("doorip", "")))
        for c in rows
        if c.settings.get("doorip")
    ]
    if not configs:
        return None
    driver = EsprfidDriver(MqttSettings.from_url(mqtt_url), configs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="esprfid-driver", daemon=True)
    thread.start()
    host = DriverHost(driver, loop, thread, engine)
    host.watch()
    driver.start()
    log.info("esp-rfid driver started for %d controller(s) on %s", len(configs), driver.settings.safe_url)
    return host
