"""BLE locks speaking the Bookgate lock profile (``drivers.ble.profile``), over bleak's public API.

One coordinator (``BleDriver``) for every lock of the gateway, with its own asyncio loop on a
thread of its own ("ble-driver"): bleak's objects belong to the loop that made them, and the
gateway's commands arrive on the driver host's loop, so ``send`` hands each command over with
``run_coroutine_threadsafe`` and awaits the result where it was called. Reports (door events,
availability) are emitted on the driver's thread, as the contract says.

Connections, as bleak advises: find the lock by address (``BleakScanner.find_device_by_address``)
with a timeout, connect with a timeout, one ``BleakClient`` per lock and never two, commands to one
lock one at a time (an ``asyncio.Lock``). A lock with ``stay_connected`` (the default: its access
events arrive only while connected) is kept connected by a supervisor task that reconnects with
exponential backoff and jitter; one without it is connected on demand and disconnected after
``idle_seconds`` without a command.

Every library error (bleak's, the OS's, D-Bus's when the host has no Bluetooth stack) becomes
``ControllerUnavailable``; the lock is reported offline with the reason once when it goes down and
online once when it comes back (the gateway then re-syncs it). A host without any Bluetooth
adapter therefore shows its locks offline with that reason and nothing else happens.

Records: every command is one record (a ``FullSync`` several) carrying a counter above the last
one the lock accepted (read from its status characteristic at each connection) and a tag under the
lock's key. A command is acknowledged only by the lock's authenticated ``ack`` event naming its
counter; the write response alone proves nothing. A lock that refuses a counter (a restarted
gateway racing a stale status) has its status read again and the record is sent with a new counter;
a lock that refuses the tag holds another key, and no retry will help. A link lost mid-write is
reconnected and the command is sent again: grants, revokes and syncs are idempotent, and each
attempt carries a fresh counter. Events whose tag does not verify or whose counter was already seen
are dropped and logged once per lock; they never become door events.

``FullSync`` asks the lock for its table hash first (``query``) and writes nothing to a lock that
already holds what it should; otherwise it rewrites the table between ``sync-begin`` and
``sync-end``, so that a valid credential is never missing while the sync runs. ``ListUsers`` cannot
be answered: the lock holds digests, not credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError

from access.protocol import (
    Availability,
    Command,
    CommandResult,
    ControllerUnavailable,
    DoorEvent,
    FullSync,
    Grant,
    HoldOpen,
    ListUsers,
    Report,
    ReportCallback,
    Revoke,
    Unlock,
    utc,
)
from drivers.ble import profile

log = logging.getLogger("drivers.ble")

SPELLINGS = {"uid": ("hex",), "em4100": ("hex",), "wiegand": ("decimal",)}
BUMBLE_PREFIX = "bumble:"


@dataclass(frozen=True, slots=True)
class LockConfig:
    key: str  # the controller key
    address: str
    lock_key: bytes = field(repr=False)  # the per-lock secret: never printed, never logged
    adapter: str = "hci0"  # a BlueZ adapter, or "bumble:<HCI transport>"
    stay_connected: bool = True
    idle_seconds: float = 30.0

    def __post_init__(self) -> None:
        if len(self.lock_key) != profile.KEY_SIZE:
            raise ValueError(f"the lock key of {self.key} must have {profile.KEY_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    scan_timeout: float = 10.0
    connect_timeout: float = 10.0
    ack_timeout: float = 5.0
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** max(0, attempt - 1)) * random.uniform(0.8, 1.2)


@dataclass(slots=True)
class LockState:
    """A typed snapshot of what the driver knows about one lock."""

    key: str
    online: bool | None = None
    reason: str = ""
    last_seen: datetime | None = None
    records_sent: int = 0
    events_dropped: int = 0


def _grant_at(key: bytes, output: int, digest: bytes, start: int, end: int, counter: int) -> bytes:
    return profile.grant_record(key, counter, output, digest, start, end)


class _Lost(Exception):
    """The link went away during an operation."""


class _Refused(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"the lock refused the record (ATT error 0x{code:02x})")
        self.code = code


@dataclass
class _Lock:
    config: LockConfig
    state: LockState
    client: BleakClient | None = None
    mutex: asyncio.Lock = field(default_factory=asyncio.Lock)
    counter: int = 0  # the last record counter used or seen accepted
    last_event: int = -1  # the highest event counter accepted (-1: none since we started)
    acks: dict[int, asyncio.Future[profile.LockEvent]] = field(default_factory=dict)
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    last_used: float = 0.0
    attempts_down: int = 0
    logged: set[str] = field(default_factory=set)


class BleDriver:
    """Coordinator for every BLE lock of the gateway."""

    def __init__(
        self,
        locks: Iterable[LockConfig],
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._configs = {c.key: c for c in locks}
        self._locks: dict[str, _Lock] = {}
        self._callbacks: list[ReportCallback] = []
        self._radios: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="ble-driver", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(10)

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        for key, config in self._configs.items():
            lock = _Lock(config, LockState(key))
            self._locks[key] = lock
            if config.stay_connected:
                self._tasks.append(asyncio.get_running_loop().create_task(self._supervise(lock)))
            else:
                self._tasks.append(asyncio.get_running_loop().create_task(self._idle_watch(lock)))

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def stop() -> None:
            if self._stopping is not None:
                self._stopping.set()
            for task in self._tasks:
                task.cancel()
            # a library may swallow a cancellation; the stopping flag ends those loops all the same
            await asyncio.wait(self._tasks, timeout=5)
            for lock in self._locks.values():
                await self._disconnect(lock)
            for radio in self._radios.values():
                with contextlib.suppress(Exception):
                    await radio.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def subscribe(self, callback: ReportCallback) -> Callable[[], None]:
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def keys(self) -> list[str]:
        return list(self._configs)

    def snapshot(self, key: str) -> LockState:
        state = self._locks[key].state
        return LockState(
            state.key, state.online, state.reason, state.last_seen, state.records_sent, state.events_dropped
        )

    def stale_controllers(self, now: datetime) -> list[str]:
        utc(now, "now")
        return [key for key, lock in self._locks.items() if lock.state.online is False]

    # ------------------------------------------------------------------ commands

    async def send(self, controller_key: str, command: Command) -> CommandResult:
        if controller_key not in self._configs:
            raise KeyError(controller_key)
        loop = self._loop
        if loop is None:
            raise ControllerUnavailable("the BLE driver is not running", controller_key)
        future = asyncio.run_coroutine_threadsafe(self._send(self._locks[controller_key], command), loop)
        return await asyncio.wrap_future(future)

    async def _send(self, lock: _Lock, command: Command) -> CommandResult:
        cid = command.command_id
        if isinstance(command, ListUsers):
            return CommandResult(cid, False, "a BLE lock holds credential digests, not a list to read back")
        if isinstance(command, HoldOpen):  # nothing to send: the profile has no held-open state
            return CommandResult(cid, True, "a BLE lock cannot be held open: free mode is not enforced here")
        async with lock.mutex:
            lock.last_used = asyncio.get_running_loop().time()
            attempt = 0
            reread = False
            while True:
                attempt += 1
                try:
                    await self._ensure_connected(lock)
                except ControllerUnavailable:
                    if attempt == 1:
                        raise  # nothing could be attempted
                    return CommandResult(cid, False, lock.state.reason, attempt - 1)
                try:
                    if reread:  # someone moved the lock's counter on: take it from the lock
                        reread = False
                        await self._read_counter(lock)
                    changes = await self._apply(lock, command)
                    lock.last_used = asyncio.get_running_loop().time()
                    return CommandResult(cid, True, "acknowledged", attempt, changes)
                except _Refused as exc:
                    if exc.code == profile.ERR_REPLAY and attempt < self.retry.max_attempts:
                        reread = True
                        continue
                    log.warning("BLE lock %s refused command %s: %s", lock.config.key, cid, exc)
                    return CommandResult(cid, False, str(exc), attempt)
                except (_Lost, ControllerUnavailable, TimeoutError) as exc:
                    detail = str(exc) or type(exc).__name__
                    await self._disconnect(lock)
                    if attempt >= self.retry.max_attempts:
                        log.warning("BLE lock %s: command %s failed: %s", lock.config.key, cid, detail)
                        return CommandResult(cid, False, detail, attempt)
                    log.info("BLE lock %s: %s; retrying command %s", lock.config.key, detail, cid)
                    await asyncio.sleep(self.retry.delay(attempt))
                except Exception as exc:  # anything else: the contract allows only a result here
                    log.exception("BLE lock %s: command %s failed unexpectedly", lock.config.key, cid)
                    await self._disconnect(lock)
                    return CommandResult(cid, False, f"driver error: {type(exc).__name__}", attempt)

    async def _apply(self, lock: _Lock, command: Command) -> dict[str, list[str]]:
        key = lock.config.lock_key
        if isinstance(command, Grant):
            digest = profile.credential_digest(key, command.credential_format, command.credential_uid)
            await self._record(
                lock,
                lambda c: profile.grant_record(
                    key, c, command.door_output, digest, command.valid_from.timestamp(), command.valid_until.timestamp()
                ),
            )
            return {}
        if isinstance(command, Revoke):
            digest = profile.credential_digest(key, command.credential_format, command.credential_uid)
            await self._record(lock, lambda c: profile.revoke_record(key, c, command.door_output, digest))
            return {}
        if isinstance(command, Unlock):
            await self._record(lock, lambda c: profile.unlock_record(key, c, command.door_output, command.seconds))
            return {}
        if isinstance(command, FullSync):
            return await self._sync(lock, command)
        raise ValueError(f"unsupported command {type(command).__name__}")

    async def _sync(self, lock: _Lock, command: FullSync) -> dict[str, list[str]]:
        key = lock.config.lock_key
        rows = {}
        for g in command.grants:
            digest = profile.credential_digest(key, g.credential_format, g.credential_uid)
            rows[(g.door_output, digest)] = (g, int(g.valid_from.timestamp()), int(g.valid_until.timestamp()))
        wanted = profile.table_hash((out, dig, start, end) for (out, dig), (_, start, end) in rows.items())
        ack = await self._record(lock, lambda c: profile.record(key, profile.OP_QUERY, c))
        if ack.table == wanted:
            return {}
        await self._record(lock, lambda c: profile.record(key, profile.OP_SYNC_BEGIN, c))
        for (out, dig), (_, start, end) in rows.items():
            await self._record(lock, functools.partial(_grant_at, key, out, dig, start, end))
        ack = await self._record(lock, lambda c: profile.record(key, profile.OP_SYNC_END, c))
        if ack.table != wanted:
            raise ControllerUnavailable("the lock's table does not match after the sync", lock.config.key)
        return {"rewritten": sorted(g.credential_uid for g, _, _ in rows.values())} if rows else {"removed": ["*"]}

    async def _record(self, lock: _Lock, build: Callable[[int], bytes]) -> profile.LockEvent:
        """Write one record and wait for the lock's authenticated acknowledgement of it."""
        client = lock.client
        if client is None or not client.is_connected:
            raise _Lost("not connected")
        lock.counter += 1
        counter = lock.counter
        waiter: asyncio.Future[profile.LockEvent] = asyncio.get_running_loop().create_future()
        lock.acks[counter] = waiter
        try:
            await self._guarded(lock, client.write_gatt_char(profile.RECORDS_UUID, build(counter), response=True))
            lock.state.records_sent += 1
            return await self._guarded(lock, asyncio.wait_for(waiter, self.retry.ack_timeout))
        except BleakGATTProtocolError as exc:
            raise _Refused(int(exc.args[0])) from exc
        finally:
            lock.acks.pop(counter, None)

    async def _guarded(self, lock: _Lock, awaitable: Any) -> Any:
        """Await an operation on the link, abandoned at once if the link drops meanwhile."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(lock.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=self.retry.ack_timeout * 2, return_when="FIRST_COMPLETED"
            )
        finally:
            lost.cancel()
        if task in done and task.cancelled():  # bumble cancels what was pending on a lost link
            raise _Lost("the lock disconnected")
        if task in done:
            try:
                return task.result()
            except BleakGATTProtocolError:
                raise
            except TimeoutError as exc:
                raise TimeoutError("no acknowledgement from the lock in time") from exc
            except Exception as exc:  # bleak, bumble, D-Bus: the link failed under us
                raise _Lost(f"link error: {exc}") from exc
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _Lost("the lock disconnected" if lock.lost.is_set() else "no answer from the lock in time")

    # ------------------------------------------------------------------ connection

    def _backend(self, lock: _Lock) -> tuple[dict[str, Any], dict[str, Any]]:
        """bleak keyword arguments for (scanner, client): the platform's stack or bumble's."""
        adapter = lock.config.adapter
        if adapter.startswith(BUMBLE_PREFIX):
            from drivers.ble.bumble_backend import BumbleClient, BumbleRadio, BumbleScanner

            radio = self._radios.get(adapter)
            if radio is None:
                radio = self._radios[adapter] = BumbleRadio(adapter.removeprefix(BUMBLE_PREFIX))
            return {"backend": BumbleScanner, "radio": radio}, {"backend": BumbleClient, "radio": radio}
        return {"bluez": {"adapter": adapter}}, {"bluez": {"adapter": adapter}}

    async def _ensure_connected(self, lock: _Lock) -> None:
        if lock.client is not None and lock.client.is_connected:
            return
        try:
            await self._connect(lock)
        except ControllerUnavailable as exc:
            self._down(lock, str(exc))
            raise
        self._up(lock)

    async def _connect(self, lock: _Lock) -> None:
        config = lock.config
        scanner_kwargs, client_kwargs = self._backend(lock)
        try:
            device = await BleakScanner.find_device_by_address(
                config.address, timeout=self.retry.scan_timeout, **scanner_kwargs
            )
        except asyncio.CancelledError:
            raise
        except FileNotFoundError as exc:
            raise ControllerUnavailable(
                f"no Bluetooth stack on this host (BlueZ over D-Bus: {exc})", config.key
            ) from exc
        except Exception as exc:  # bleak, D-Bus, the OS, bumble: all mean "cannot reach it"
            raise ControllerUnavailable(f"no usable Bluetooth adapter {config.adapter!r}: {exc}", config.key) from exc
        if device is None:
            raise ControllerUnavailable(f"lock {config.address} not found (out of range or no power)", config.key)
        lock.lost = asyncio.Event()
        lost = lock.lost

        def disconnected(_client: BleakClient) -> None:
            lost.set()

        client = BleakClient(
            device, disconnected_callback=disconnected, timeout=self.retry.connect_timeout, **client_kwargs
        )
        try:
            await asyncio.wait_for(client.connect(), self.retry.connect_timeout + 1)
            lock.client = client
            await client.start_notify(profile.EVENTS_UUID, lambda _c, data: self._on_notify(lock, data))
            await self._read_counter(lock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._disconnect(lock)
            reason = str(exc) or type(exc).__name__
            raise ControllerUnavailable(f"cannot use lock {config.address}: {reason}", config.key) from exc

    async def _read_counter(self, lock: _Lock) -> None:
        client = lock.client
        if client is None:
            raise _Lost("not connected")
        data = await asyncio.wait_for(client.read_gatt_char(profile.STATUS_UUID), self.retry.ack_timeout)
        try:
            lock.counter = max(lock.counter, profile.open_status(lock.config.lock_key, bytes(data)))
        except profile.ProfileError as exc:
            raise ControllerUnavailable(
                f"the lock's status does not verify ({exc}): wrong key?", lock.config.key
            ) from exc

    async def _disconnect(self, lock: _Lock) -> None:
        client, lock.client = lock.client, None
        for waiter in lock.acks.values():
            if not waiter.done():
                waiter.cancel()
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 5)

    def _up(self, lock: _Lock) -> None:
        state = lock.state
        lock.attempts_down = 0
        state.last_seen = self._clock()
        if state.online is not True:
            log.info("BLE lock %s (%s) is online", lock.config.key, lock.config.address)
            state.online, state.reason = True, ""
            self._emit(Availability(lock.config.key, True, self._clock()))

    def _down(self, lock: _Lock, reason: str) -> None:
        state = lock.state
        lock.attempts_down += 1
        if state.online is not False or state.reason != reason:
            if state.online is not False:
                log.warning("BLE lock %s is offline: %s", lock.config.key, reason)
            state.online, state.reason = False, reason
            self._emit(Availability(lock.config.key, False, self._clock(), reason=reason))

    async def _supervise(self, lock: _Lock) -> None:
        """Keep a ``stay_connected`` lock connected: reconnect with backoff, forever."""
        while not self._stopped():
            try:
                async with lock.mutex:
                    await self._ensure_connected(lock)
                await self._pause(lock.lost, None)
                if self._stopped():
                    return
                log.info("BLE lock %s disconnected; reconnecting", lock.config.key)
                await self._disconnect(lock)
            except asyncio.CancelledError:
                raise
            except ControllerUnavailable:
                await self._pause(None, self.retry.delay(lock.attempts_down))
            except Exception:  # a supervisor must never die
                log.exception("BLE lock %s: supervision error", lock.config.key)
                await self._pause(None, self.retry.delay(lock.attempts_down + 1))

    def _stopped(self) -> bool:
        return self._stopping is None or self._stopping.is_set()

    async def _pause(self, until: asyncio.Event | None, timeout: float | None) -> None:
        """Wait for ``until`` (or ``timeout``), cut short when the driver stops."""
        assert self._stopping is not None
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if until is not None:
            waits.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()

    async def _idle_watch(self, lock: _Lock) -> None:
        """Disconnect an on-demand lock once it has been idle for ``idle_seconds``."""
        loop = asyncio.get_running_loop()
        while not self._stopped():
            await self._pause(None, min(5.0, lock.config.idle_seconds / 2))
            if lock.client is None or lock.mutex.locked():
                continue
            if loop.time() - lock.last_used >= lock.config.idle_seconds:
                async with lock.mutex:
                    await self._disconnect(lock)
                log.debug("BLE lock %s idle: disconnected", lock.config.key)

    # ------------------------------------------------------------------ events

    def _drop(self, lock: _Lock, why: str) -> None:
        if why not in lock.logged:  # once per lock and reason: a flood must not flood the log
            lock.logged.add(why)
            log.warning("BLE lock %s: event dropped: %s", lock.config.key, why)
        lock.state.events_dropped += 1

    def _on_notify(self, lock: _Lock, data: bytearray) -> None:
        """A notification from the lock (on the driver's loop): verified, then reported."""
        try:
            event = profile.open_event(lock.config.lock_key, bytes(data))
        except profile.ProfileError as exc:
            self._drop(lock, str(exc))
            return
        if event.counter <= lock.last_event:
            self._drop(lock, "replayed event (counter already seen)")
            return
        lock.last_event = event.counter
        lock.state.last_seen = now = self._clock()
        key = lock.config.key
        if event.kind == "ack":
            waiter = lock.acks.get(event.acked or 0)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
            return
        if event.kind in ("granted", "denied"):
            spellings = SPELLINGS.get(event.credential_format or "", ("hex",))
            raw = {"lock_time": event.lock_time, "format": event.credential_format, "counter": event.counter}
            self._emit(DoorEvent(key, event.kind, event.credential, event.output, now, raw, spellings))  # type: ignore[arg-type]
        elif event.kind == "door" and event.door_state in ("forced", "held_open"):
            self._emit(DoorEvent(key, event.door_state, None, event.output, now, {"lock_time": event.lock_time}))  # type: ignore[arg-type]
        elif event.kind == "tamper":
            self._emit(DoorEvent(key, "tamper", None, None, now, {"lock_time": event.lock_time}))
        else:
            log.debug("BLE lock %s: door %s is %s", key, event.output, event.door_state)

    def _emit(self, report: Report) -> None:
        for callback in list(self._callbacks):
            try:
                callback(report)
            except Exception:
                log.exception("BLE: report callback failed for %s", type(report).__name__)
