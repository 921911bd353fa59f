"""Wiring the controller drivers into the server: the one place that runs drivers.

Which drivers exist is the drivers' registry's business: `start_drivers` builds one driver per
controller kind present in the database (each family's factory, from its controllers' validated
settings) and `DriverHost` drives them all on one asyncio event-loop thread of ours. The dispatcher
(a scheduler job, synchronous) hands it commands through `send`/`send_many`, which route each one by
controller key to its driver and wait for the acknowledgements. Reports (door events, heartbeats,
boots) from every driver are handled by a worker thread of ours, so no driver's I/O thread ever
waits on the database.

Online decisions. A controller that decides presentations itself from the cards it stores (esp-rfid)
reports a card it does not store as a denied access event. For a door whose resource is in an
online mode (`authorized`), that report is the question: the gateway answers it from its in-memory
index and, when the answer is yes, releases the door with `Unlock` through the same driver (on
esp-rfid, ``opendoor``: relay 1, the only one the firmware can release remotely). No answer, no
release: a lost link keeps the door shut.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import col, select

from access import events
from access.decisions import DecisionIndex
from access.events import EntryListeners
from access.models import Controller
from access.protocol import (
    Availability,
    BatchSender,
    Booted,
    Command,
    CommandResult,
    ControllerDriver,
    ControllerUnavailable,
    DoorEvent,
    Heartbeat,
    OnlineDecide,
    Presentation,
    Unlock,
    Verdict,
)
from access.supervision import full_sync, set_state
from config import Settings
from core import audit
from core.audit import SYSTEM
from core.db import read_session, utcnow, write_session
from drivers.family import DriverContext
from drivers.registry import REGISTRY, DriverRegistry

log = logging.getLogger("bookgate.controllers")

SEND_TIMEOUT = 600.0


@dataclass
class DriverHost:
    drivers: dict[str, ControllerDriver]  # kind -> its one driver
    routes: dict[str, str]  # controller key -> kind
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    engine: Engine
    decisions: DecisionIndex | None = None
    listeners: EntryListeners | None = None  # who hears of a granted entry (bms checks bookings in)
    reports: queue.Queue = field(default_factory=queue.Queue)
    _unsubscribe: list[Callable[[], None]] = field(default_factory=list)

    def driver_for(self, controller_key: str) -> ControllerDriver | None:
        kind = self.routes.get(controller_key)
        return None if kind is None else self.drivers.get(kind)

    def keys(self) -> list[str]:
        """The controllers this host drives."""
        return list(self.routes)

    @property
    def connected(self) -> bool:
        """Every driver that can tell says its transport is up (and, for MQTT, subscribed)."""
        return all(_connected(d) for d in self.drivers.values())

    def watch(self) -> None:
        """Reports arrive on the drivers' I/O threads; a worker of ours records them and re-syncs."""
        for driver in self.drivers.values():
            self._unsubscribe.append(driver.subscribe(self._on_report))
        threading.Thread(target=self._work, name="driver-supervision", daemon=True).start()

    def _on_report(self, report: object) -> None:
        if isinstance(report, DoorEvent) and report.raw.get("decided_by") == "gateway":
            self.reports.put(("online", report))  # decided by the driver with our index (OSDP): record only
            return
        if isinstance(report, DoorEvent) and self._decide_online(report):
            return
        self.reports.put(report)

    def _work(self) -> None:
        """Handle reports in order; the re-syncs they ask for are gathered and sent together, so a
        thousand controllers coming back after a broker or gateway restart are re-synced
        concurrently instead of one round trip after another."""
        while True:
            batch = [self.reports.get()]
            while len(batch) < 5000:
                try:
                    batch.append(self.reports.get_nowait())
                except queue.Empty:
                    break
            resync: list[str] = []
            for report in batch:
                if report is None:
                    return
                try:
                    key = self._handle(report)
                except Exception:
                    log.exception("handling %s failed", type(report).__name__)
                    continue
                if key is not None and key not in resync:
                    resync.append(key)
            if resync:
                try:
                    self.resync_many(resync)
                except Exception:
                    log.exception("re-syncing %d controller(s) failed", len(resync))

    def _handle(self, report: object) -> str | None:
        """Record one report; returns the controller to re-sync, if it asks for one."""
        if isinstance(report, tuple):  # ("online", event): a presentation the gateway decided
            self.record_event(report[1], decided_by="gateway")
        elif isinstance(report, DoorEvent):
            self.record_event(report)
        elif isinstance(report, Availability):
            with write_session(self.engine) as s:
                state = "online" if report.online else "degraded" if report.degraded else "offline"
                set_state(s, report.controller_key, state, report.at)
            if report.online:
                return report.controller_key
        elif isinstance(report, Booted):
            return report.controller_key
        elif isinstance(report, Heartbeat):
            with write_session(self.engine) as s:
                set_state(s, report.controller_key, "online", report.at)
        return None

    def record_event(self, report: DoorEvent, decided_by: str = "controller") -> None:
        # a PIN or a QR code is looked up as such, and never written down (access.events.record)
        kind = str(report.raw.get("credential_kind", "badge"))
        with write_session(self.engine) as s:
            events.record(s, report, decided_by=decided_by, credential_kind=kind, listeners=self.listeners)

    # ------------------------------------------------------------------ online decisions

    def _decide_online(self, report: DoorEvent) -> bool:
        """A card the device does not know, at a door in an online mode: decide it here, now.

        Runs on the driver's I/O thread (a dict lookup); the release and the record go elsewhere."""
        index = self.decisions
        if index is None or report.kind != "denied" or not report.credential_uid or report.door_output is None:
            return False
        driver = self.driver_for(report.controller_key)
        if driver is None:
            return False
        door = index.door_id(report.controller_key, report.door_output)
        if door is None:
            return False
        decision = index.decide(door, "badge", report.credential_uid, report.at, report.spellings)
        if not (decision.allowed and decision.online):
            return False
        command = Unlock(f"online-{secrets.token_hex(4)}", report.door_output)
        future = asyncio.run_coroutine_threadsafe(driver.send(report.controller_key, command), self.loop)
        granted = replace(report, kind="granted")

        def released(done: asyncio.Future | object) -> None:
            try:
                ok = bool(future.result().ok)
            except Exception as exc:
                log.warning("online release at %s failed: %s", report.controller_key, exc)
                ok = False
            self.reports.put(("online", granted if ok else report))

        future.add_done_callback(released)
        return True

    # ------------------------------------------------------------------ commands

    def send(self, controller_key: str, command: Command) -> CommandResult:
        return self.send_many([(controller_key, command)])[0]

    def send_many(self, pairs: Sequence[tuple[str, Command]]) -> list[CommandResult]:
        """Send concurrently, each to its controller's driver (a driver keeps one command in flight
        per controller)."""

        async def one(key: str, command: Command) -> CommandResult:
            driver = self.driver_for(key)
            try:
                if driver is None:
                    raise KeyError(key)
                return await driver.send(key, command)
            except KeyError:
                return CommandResult(command.command_id, False, f"no driven controller {key!r}")
            except ControllerUnavailable as exc:
                return CommandResult(command.command_id, False, str(exc))

        async def all_of() -> list[CommandResult]:
            # a driver that sends batches gets its commands in one call; the others one by one
            out: list[CommandResult | None] = [None] * len(pairs)
            batches: dict[int, tuple[BatchSender, list[int]]] = {}
            single: list[int] = []
            batching = {id(d): isinstance(d, BatchSender) for d in self.drivers.values()}
            for i, (key, _command) in enumerate(pairs):
                driver = self.driver_for(key)
                if driver is not None and batching.get(id(driver)):
                    batches.setdefault(id(driver), (driver, []))[1].append(i)  # type: ignore[arg-type]
                else:
                    single.append(i)

            async def batch(driver: BatchSender, index: list[int]) -> None:
                for i, result in zip(index, await driver.send_batch([pairs[i] for i in index]), strict=True):
                    out[i] = result

            async def each(i: int) -> None:
                out[i] = await one(*pairs[i])

            await asyncio.gather(*(batch(d, index) for d, index in batches.values()), *(each(i) for i in single))
            return [r for r in out if r is not None]

        future = asyncio.run_coroutine_threadsafe(all_of(), self.loop)
        try:
            return future.result(timeout=SEND_TIMEOUT)
        except TimeoutError:
            future.cancel()
            return [CommandResult(c.command_id, False, "no answer in time") for _, c in pairs]

    def resync(self, key: str) -> bool:
        """Replace what the controller holds by its full desired state (after a reboot or reconnect)."""
        return self.resync_many([key])[key]

    def resync_many(self, keys: list[str]) -> dict[str, bool]:
        # A retained 'online' can arrive before every subscription is acknowledged: wait for them.
        drivers = {id(d): d for d in map(self.driver_for, keys) if d is not None}.values()
        deadline = time.monotonic() + 30
        while not all(map(_connected, drivers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        now = utcnow()
        with read_session(self.engine) as s:
            commands = [(key, full_sync(s, key, now)) for key in keys]
        results = self.send_many(commands)
        with write_session(self.engine) as s:
            for key, result in zip(keys, results, strict=True):
                set_state(s, key, "online" if result.ok else "degraded", utcnow(), synced=result.ok)
        for key, result in zip(keys, results, strict=True):
            if not result.ok:
                log.warning("re-sync of %s failed: %s", key, result.detail)
        return {key: result.ok for key, result in zip(keys, results, strict=True)}

    def reconcile(self, key: str) -> dict[str, list[str]] | None:
        """Read back what the controller holds and repair it by difference (the driver's FullSync).

        Returns what was changed (empty when it already matched: nothing written, nothing audited),
        None if it could not be read or repaired."""
        with read_session(self.engine) as s:
            desired = full_sync(s, key, utcnow())
        result = self.send(key, desired)
        if result.changes:
            log.warning("reconcile: %s differed from its desired state: %s", key, result.changes)
            with write_session(self.engine) as s:
                audit.record(
                    s, SYSTEM, "controller.reconciled", "controller", key, repaired=result.ok, **result.changes
                )
        if not result.ok:
            log.warning("reconcile of %s failed: %s", key, result.detail)
            with write_session(self.engine) as s:
                set_state(s, key, "degraded", utcnow())
            return None
        with write_session(self.engine) as s:
            set_state(s, key, "online", utcnow(), synced=True)
        return result.changes

    def supervise(self) -> int:
        """Controllers that missed their heartbeats (or whose last will said so) are `offline`.

        A last will covers a device whose connection dies; this covers one that hangs while its
        connection lives, or a broker that lost the will. Returns how many were marked."""
        now = utcnow()
        stale = {key for driver in self.drivers.values() for key in driver.stale_controllers(now)}
        if not stale:
            return 0
        marked = 0
        with write_session(self.engine) as s:
            for ctl in s.exec(select(Controller).where(Controller.active, col(Controller.state) != "offline")).all():
                if ctl.key in stale:
                    set_state(s, ctl.key, "offline", utcnow())
                    log.warning("controller %s missed its heartbeats: offline", ctl.key)
                    marked += 1
        return marked

    def reconcile_all(self) -> int:
        """Every online or degraded controller in turn; returns how many needed a repair."""
        with read_session(self.engine) as s:
            # degraded ones too: a failed re-sync or command is exactly what this repairs
            keys = [
                c.key
                for c in s.exec(
                    select(Controller).where(Controller.active, col(Controller.state).in_(["online", "degraded"]))
                )
            ]
        repaired = 0
        for key in keys:
            if key not in self.routes:
                continue
            diff = self.reconcile(key)
            repaired += bool(diff)
        return repaired

    def stop(self) -> None:
        self.reports.put(None)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for kind, driver in self.drivers.items():
            try:
                driver.stop()
            except Exception:  # the others must stop all the same
                log.exception("stopping the %s driver failed", kind)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def online_decider(index: DecisionIndex) -> OnlineDecide:
    """The decision function lent to drivers whose readers hold no card list (OSDP): the in-memory
    index answers, on the driver's thread. Not loaded yet, or a door it does not know: refused."""

    def decide(p: Presentation) -> Verdict:
        if not index.loaded:
            return Verdict(False, "no_decision_data")
        door = index.door_id(p.controller_key, p.door_output)
        if door is None:
            return Verdict(False, "unknown_door")
        decision = index.decide(door, p.kind, p.value, p.at, p.spellings)
        return Verdict(decision.allowed, decision.reason)

    return decide


def _connected(driver: ControllerDriver) -> bool:
    """A driver may say whether its transport is up (`connected`); one that cannot is taken at its word."""
    return bool(getattr(driver, "connected", True))


def device_key_deriver(settings: Settings) -> Callable[[str], bytes]:
    """Devices' own keys (a BLE lock's), derived like the credential keys (`access.models`) with
    HKDF-SHA256 from the credential key (or the secret key), each under its own label: no device key
    is stored, and the lock is keyed at installation with what this returns for its label."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def derive(label: str) -> bytes:
        material = (settings.credential_key or settings.effective_secret_key()).encode()  # read when needed
        info = b"bookgate device key v1\x1f" + label.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)

    return derive


def start_drivers(
    engine: Engine,
    settings: Settings,
    decisions: DecisionIndex | None = None,
    *,
    listeners: EntryListeners | None = None,
    registry: DriverRegistry = REGISTRY,
) -> DriverHost | None:
    """One driver per kind of the active controllers in the database, from the registry's factories.

    None when no kind present can run here (no controller, or no broker configured for them)."""
    context = DriverContext(
        mqtt_url=settings.mqtt_url,
        device_key=device_key_deriver(settings),
        decide=online_decider(decisions) if decisions is not None else None,
    )
    with read_session(engine) as s:
        rows = s.exec(select(Controller).where(Controller.active).order_by(col(Controller.key))).all()
    by_kind: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    undriven: dict[str, list[str]] = defaultdict(list)
    for c in rows:
        family = registry.get(c.driver)
        if family is None or family.factory is None:
            undriven[c.driver].append(c.key)
            continue
        try:
            by_kind[c.driver].append((c.key, family.settings.model_validate(c.settings)))
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            log.warning("controller %s (%s) not driven, its settings are refused: %s", c.key, c.driver, reasons)
    for kind, keys in undriven.items():
        why = "no driver family of that kind" if kind not in registry else "its family has no driver yet"
        log.info("%d %s controller(s) not driven (%s): %s", len(keys), kind, why, ", ".join(keys))
    drivers: dict[str, ControllerDriver] = {}
    routes: dict[str, str] = {}
    for kind, pairs in by_kind.items():
        factory = registry.families[kind].factory
        assert factory is not None  # sorted out above
        driver = factory(pairs, context)
        if driver is None:  # the family logged why
            continue
        if not isinstance(driver, ControllerDriver):
            raise TypeError(f"the {kind} factory built a {type(driver).__name__}, not a ControllerDriver")
        drivers[kind] = driver
        routes.update((key, kind) for key, _ in pairs)
    if not drivers:
        return None
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="driver-host", daemon=True)
    thread.start()
    host = DriverHost(drivers, routes, loop, thread, engine, decisions, listeners)
    host.watch()
    try:
        for kind, driver in drivers.items():
            driver.start()
            log.info("%s driver started for %d controller(s)", kind, len(by_kind[kind]))
    except Exception:
        host.stop()
        raise
    return host
