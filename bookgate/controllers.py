"""Wiring the controller drivers into the server: the one place that knows drivers exist.

The esp-rfid driver speaks asyncio on its own event-loop thread; the dispatcher (a scheduler
job, synchronous) hands it commands through `send`, which waits for the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import select

from access.models import Controller
from access.protocol import Command, CommandResult, ControllerUnavailable
from bookgate.db import read_session
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings

log = logging.getLogger("bookgate.controllers")


@dataclass
class DriverHost:
    driver: EsprfidDriver
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def send(self, controller_key: str, command: Command) -> CommandResult:
        try:
            future = asyncio.run_coroutine_threadsafe(self.driver.send(controller_key, command), self.loop)
            return future.result(timeout=120)
        except KeyError:
            return CommandResult(command.command_id, False, f"no esp-rfid controller {controller_key!r} configured")
        except ControllerUnavailable as exc:
            return CommandResult(command.command_id, False, str(exc))

    def stop(self) -> None:
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
    driver.start()
    log.info("esp-rfid driver started for %d controller(s) on %s", len(configs), driver.settings.safe_url)
    return DriverHost(driver, loop, thread)
