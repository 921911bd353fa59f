"""esp-rfid 2.x controllers over MQTT: one coordinator per broker connection.

The coordinator owns one paho client. paho's network loop runs in its own thread
(``loop_start``); inbound messages are decoded there and handed to report callbacks on that
thread, so asyncio users wrap their callback with ``loop.call_soon_threadsafe``. ``send`` is a
coroutine run on the caller's event loop; acknowledgements cross from the network thread to it
with ``call_soon_threadsafe``.

Acknowledgements. The firmware answers ``adduser``, ``deletuid`` and ``deletusers`` with
``{"type": <command>, "ip": <its IP>}`` and ``opendoor`` with an access event whose user is
``"MQTT"``; none of them echoes a command id or the card. The driver therefore keeps exactly one
command in flight per controller (``send`` holds an ``asyncio.Lock`` and the controller's lane;
``send_batch`` queues grants and revokes on the lane) and accepts, as the acknowledgement, the
next reply of the expected type from that controller's IP. The firmware handles its command queue
in order and publishes on one topic, and MQTT keeps one publisher's order, so the reply that comes
back is the reply to what was sent. The residual ambiguity is a reply to an abandoned attempt
arriving after its timeout; every command is idempotent (``adduser`` rewrites the whole card
record, ``deletuid`` of an absent card does nothing), so such a late reply still describes the state
the retry asks for. Anything that must be proved is proved by reading back with ``ListUsers``.

``getuserlist`` answers with one message per card (the stored ``adduser`` command, or a
``userfile`` record for cards added on the device's web page) and no end marker, and an empty list
answers nothing at all. The driver publishes ``getuserlist`` immediately followed by a
``deletuid`` of a sentinel uid that no card has: its acknowledgement comes after the last card and
closes the list.

Card UIDs. The device looks a presented card up under the UID its reader chip produced, so the
driver stores each card spelled the way the controller's ``reader`` spells it (``codec.READERS``:
lower-case hex without leading zeros for MFRC522/PN532, padded hex for RDM6300 125 kHz tags,
decimal for Wiegand) and reports door events with the spellings that reader uses, so the gateway
finds the card's owner. A card no chip of the reader can read is not stored there.

``FullSync`` (re-sync after a boot, and reconcile) reads the device's list first and repairs by
difference: ``deletuid`` for cards that should not be there, ``adduser`` for cards missing or
different. A device that already matches gets no write, and a device is never wiped.

A timed-out attempt is retried with exponential backoff and jitter; after ``max_attempts`` the
result is ``ok=False`` and the gateway decides what that means (degraded controller). Right after a
boot the firmware has not subscribed to its command topic yet (it publishes ``boot`` first), so
within ``boot_window`` seconds of a boot message the first command is re-sent after only
``boot_ack_timeout``, up to ``boot_quick_tries`` times, before the normal schedule; those quick
tries do not count against ``max_attempts`` (``CommandResult.attempts`` counts every send).

The device stores one validity window per card, shared by its relays. The driver keeps a shadow of
what it has written (per controller, per card, which relays) so that a grant or revoke on one relay
rewrites the record without dropping the card's other relays; two relays of one card with
different windows cannot be represented and are refused rather than widened. The shadow is
rebuilt by ``FullSync`` and ``ListUsers``; the gateway sends ``FullSync`` on ``Booted``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt

from access.protocol import (
    Availability,
    Booted,
    Command,
    CommandResult,
    ControllerUnavailable,
    DoorEvent,
    FullSync,
    Grant,
    Heartbeat,
    HoldOpen,
    ListUsers,
    Report,
    ReportCallback,
    Revoke,
    Unlock,
    UserList,
    utc,
)
from drivers.esprfid import codec
from drivers.mqtt import MqttSettings, make_client

log = logging.getLogger("drivers.esprfid")

FENCE_UID = "bookgate-list-end"  # never a card: a PICC UID is hex digits, a Wiegand code decimal

# Attempts a lane job already used before it was handed to `send` for its retries.
_USED_ATTEMPTS: ContextVar[int] = ContextVar("esprfid_used_attempts", default=0)


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Where one device listens: its base topic and the IP it checks in ``doorip``.

    ``hostname`` lets devices share a topic (the firmware allows it): access events carry the
    hostname but not the IP. ``heartbeat_interval`` is the device's configured period (180 s by
    default in the firmware).
    """

    key: str
    topic: str
    doorip: str
    hostname: str | None = None
    heartbeat_interval: float = 180.0
    reader: str = "mfrc522"  # the device's reader type (codec.READERS)

    def __post_init__(self) -> None:
        if not self.key or not self.doorip:
            raise ValueError("controller key and doorip are required")
        if self.reader not in codec.READERS:
            raise ValueError(f"unknown esp-rfid reader {self.reader!r} (one of {', '.join(codec.READERS)})")
        if not self.topic or any(c in self.topic for c in "#+") or self.topic.endswith("/"):
            raise ValueError(f"invalid base topic {self.topic!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    ack_timeout: float = 5.0
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    boot_ack_timeout: float = 0.4  # right after a boot: the device may not be subscribed yet
    boot_window: float = 10.0
    boot_quick_tries: int = 3

    def delay(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)


@dataclass(slots=True)
class ControllerState:
    """A typed snapshot of what the driver knows about one device."""

    key: str
    online: bool | None = None  # last availability message; None before the first one
    last_seen: datetime | None = None  # last boot or heartbeat
    last_boot: datetime | None = None
    ip: str | None = None
    uptime_s: int | None = None
    held: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Plan:
    """One record write or delete on one device, and what the driver's shadow becomes once acknowledged."""

    payload: dict[str, Any]
    expect: str
    uid: str
    record: codec.UserRecord | None  # None: the card is deleted
    detail: str


@dataclass(slots=True, eq=False)
class _Batch:
    """Commands given to ``send_batch`` together: one completion for all of them."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    results: list[CommandResult | None]
    left: int
    inflight: set[_Job] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Job:
    """A grant or revoke of a batch, queued on its controller's lane."""

    ctl: _Controller
    command: Command
    batch: _Batch
    index: int
    plan: _Plan | None = None
    deadline: float = 0.0


@dataclass(slots=True)
class _Pending:
    loop: asyncio.AbstractEventLoop | None  # None for a lane job (``job``): its ack is handled in place
    future: asyncio.Future[None] | None
    expect: str
    records: list[codec.UserRecord] | None = None
    rebooted: bool = False  # the device booted meanwhile: what was sent before is lost, send again
    job: _Job | None = None

    def wake(self) -> None:
        if self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future)


@dataclass(slots=True)
class _Controller:
    config: ControllerConfig
    registered_at: datetime
    state: ControllerState
    held: dict[str, codec.UserRecord] = field(default_factory=dict)
    pending: _Pending | None = None
    lock: asyncio.Lock | None = None
    quick_left: int = 0  # quick re-sends left for the first command after a boot
    lane: deque[_Job] = field(default_factory=deque)  # batch commands waiting for the one in flight
    exclusive: int = 0  # a `send` holds the device: the lane starts nothing meanwhile
    lane_waiters: list[asyncio.Future[None]] = field(default_factory=list)


class _Failed(Exception):
    """A step that exhausted its attempts; carries the count for the result."""

    def __init__(self, detail: str, attempts: int) -> None:
        super().__init__(detail)
        self.attempts = attempts


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EsprfidDriver:
    """Coordinator for every esp-rfid device reachable through one MQTT broker connection."""

    def __init__(
        self,
        settings: MqttSettings,
        controllers: Iterable[ControllerConfig] = (),
        *,
        retry: RetryPolicy | None = None,
        missed_heartbeats: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.missed_heartbeats = missed_heartbeats
        self._clock = clock
        self._lock = threading.Lock()
        self._lane_lock = threading.Lock()  # the lanes, `pending` of lane commands, batch completion
        self._tasks: set[asyncio.Task[None]] = set()  # retries handed over from the lanes
        self._controllers: dict[str, _Controller] = {}
        self._by_topic: dict[str, list[str]] = {}
        self._list_locks: dict[str, asyncio.Lock] = {}
        self._callbacks: list[ReportCallback] = []
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()  # connected and every subscription acknowledged
        self._unacked_subs: set[int] = set()
        self._down_logged = False
        self._started = False
        self._drop_log: dict[str, float] = {}
        self.dropped = 0  # inbound messages discarded (malformed, oversized, unknown, spoofed)
        for config in controllers:
            self.add_controller(config)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after any loss."""
        if self._started:
            return
        try:
            client = make_client(self.settings, client_id_prefix="bookgate-esprfid")
            client.on_connect = self._on_connect
            client.on_connect_fail = self._on_connect_fail
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        except (OSError, ValueError, ssl.SSLError) as exc:  # bad CA file, bad host, bad TLS setup
            raise ControllerUnavailable(f"cannot use MQTT broker {self.settings.safe_url}: {exc}") from exc
        self._client = client
        self._started = True
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        self._started = False
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # ------------------------------------------------------------------ controllers

    def add_controller(self, config: ControllerConfig) -> None:
        with self._lock:
            if config.key in self._controllers:
                raise ValueError(f"controller {config.key!r} already registered")
            self._controllers[config.key] = _Controller(config, self._clock(), ControllerState(config.key))
            keys = self._by_topic.setdefault(config.topic, [])
            keys.append(config.key)
            first = len(keys) == 1
        if first and self._client is not None and self.connected:
            self._client.subscribe([(f"{config.topic}/{codec.SEND}", 1), (f"{config.topic}/{codec.AVTY}", 1)])

    def remove_controller(self, key: str) -> None:
        with self._lock:
            ctl = self._controllers.pop(key, None)
            if ctl is None:
                return
            keys = self._by_topic[ctl.config.topic]
            keys.remove(key)
            last = not keys
            if last:
                del self._by_topic[ctl.config.topic]
        if last and self._client is not None and self.connected:
            topic = ctl.config.topic
            self._client.unsubscribe([f"{topic}/{codec.SEND}", f"{topic}/{codec.AVTY}"])

    def snapshot(self, key: str) -> ControllerState:
        ctl = self._get(key)
        state = ctl.state
        return ControllerState(
            key=state.key,
            online=state.online,
            last_seen=state.last_seen,
            last_boot=state.last_boot,
            ip=state.ip,
            uptime_s=state.uptime_s,
            held=frozenset(ctl.held),
        )

    def stale_controllers(self, now: datetime) -> list[str]:
        """Controllers that missed ``missed_heartbeats`` beats, or whose last will said offline.

        One never heard from counts from its registration, so a dead device is reported too.
        """
        now = utc(now, "now")
        with self._lock:
            controllers = list(self._controllers.values())
        stale = []
        for ctl in controllers:
            limit = timedelta(seconds=ctl.config.heartbeat_interval * self.missed_heartbeats)
            reference = ctl.state.last_seen or ctl.registered_at
            if now - reference > limit or ctl.state.online is False:
                stale.append(ctl.config.key)
        return stale

    def subscribe(self, callback: ReportCallback) -> Callable[[], None]:
        """Register a report callback (called on the network thread); returns an unsubscribe."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ commands

    async def send(self, controller_key: str, command: Command) -> CommandResult:
        ctl = self._get(controller_key)
        if not self.connected:
            raise ControllerUnavailable(f"MQTT broker {self.settings.safe_url} is unreachable", controller_key)
        if ctl.lock is None:
            ctl.lock = asyncio.Lock()
        async with ctl.lock:
            await self._hold_lane(ctl)
            try:
                result = await self._dispatch(ctl, command)
            except _Failed as exc:
                log.warning("esp-rfid %s: command %s failed: %s", controller_key, command.command_id, exc)
                return CommandResult(command.command_id, False, str(exc), exc.attempts)
            finally:
                self._release_lane(ctl)
        log.debug("esp-rfid %s: command %s -> %s", controller_key, command.command_id, result)
        return result

    # ------------------------------------------------------------------ batches (the lanes)
    #
    # `send_batch` costs what a bare MQTT client costs per command: each controller has a lane (a
    # queue) of grants and revokes; the first is published at once, and each acknowledgement,
    # handled on paho's network thread, settles its command and publishes the lane's next one
    # there, as a raw client would. The batch completes with one hand-off to the event loop. Only
    # the first attempt runs in the lane: a command whose reply does not come in time, or whose
    # device reboots, or that needs the quick re-sends after a boot, goes on through `send` and its
    # retry schedule. `send` (and so FullSync, ListUsers, Unlock) holds the device exclusively: the
    # lane starts nothing while it runs, and it waits for the lane's command in flight.

    async def send_batch(self, pairs: Sequence[tuple[str, Command]]) -> list[CommandResult]:
        """``send`` for each pair, results in order; an unknown controller or a broker down is a
        failed result, not an exception."""
        if not pairs:
            return []
        loop = asyncio.get_running_loop()
        batch = _Batch(loop, loop.create_future(), [None] * len(pairs), len(pairs))
        jobs: list[_Job] = []
        for index, (key, command) in enumerate(pairs):
            with self._lock:
                ctl = self._controllers.get(key)
            if ctl is None:
                unknown = CommandResult(command.command_id, False, f"unknown esp-rfid controller {key!r}")
                self._complete(batch, index, unknown)
            elif isinstance(command, Grant | Revoke):
                jobs.append(_Job(ctl, command, batch, index))
            else:  # sync, list, unlock: through `send`
                self._spawn(self._retry(_Job(ctl, command, batch, index), used=0, wait=False))
        publish: list[_Pending] = []
        with self._lane_lock:
            touched: dict[int, _Controller] = {}
            for job in jobs:
                job.ctl.lane.append(job)
                touched[id(job.ctl)] = job.ctl
            for ctl in touched.values():
                self._start_lane(ctl, publish)
        self._publish_lane(publish)
        period = max(0.01, min(0.1, self.retry.ack_timeout / 5))
        try:
            while not batch.future.done():
                await asyncio.wait({batch.future}, timeout=period)
                now = time.monotonic()
                for job in [j for j in batch.inflight if j.deadline <= now]:
                    pending = job.ctl.pending
                    if pending is not None and pending.job is job:
                        detail = f"no {pending.expect} reply within {self.retry.ack_timeout:g}s"
                        self._lane_failed(pending, detail, used=1)
        finally:
            if not batch.future.done():  # cancelled: free the lanes of what is left of this batch
                self._abandon(batch, jobs)
        return [r for r in batch.results if r is not None]

    def _abandon(self, batch: _Batch, jobs: list[_Job]) -> None:
        publish: list[_Pending] = []
        with self._lane_lock:
            batch.left = -1  # never completes
            for ctl in {id(j.ctl): j.ctl for j in jobs}.values():
                ctl.lane = deque(j for j in ctl.lane if j.batch is not batch)
                if ctl.pending is not None and ctl.pending.job is not None and ctl.pending.job.batch is batch:
                    ctl.pending = None
                    self._lane_free(ctl, publish)
            batch.inflight.clear()
        self._publish_lane(publish)

    def _start_lane(self, ctl: _Controller, publish: list[_Pending]) -> None:
        """Start the lane's next command if the device is free (lane lock held; the caller publishes
        what is added to `publish` once it has let the lock go)."""
        while ctl.lane and ctl.pending is None and not ctl.exclusive:
            job = ctl.lane.popleft()
            assert isinstance(job.command, Grant | Revoke)  # only these take the lane
            if (ctl.quick_left > 0 and self._just_booted(ctl)) or not self.connected:
                self._hand_over(job, used=0, wait=False)
                continue
            plan = self._plan(ctl, job.command)
            if isinstance(plan, CommandResult):
                self._complete_locked(job.batch, job.index, plan)
                continue
            job.plan = plan
            job.deadline = time.monotonic() + self.retry.ack_timeout
            pending = _Pending(None, None, plan.expect, job=job)
            ctl.pending = pending  # before publishing: a fast reply must find it
            job.batch.inflight.add(job)
            publish.append(pending)

    def _publish_lane(self, publish: list[_Pending]) -> None:
        for pending in publish:
            job = pending.job
            assert job is not None and job.plan is not None
            topic = f"{job.ctl.config.topic}/{codec.CMD}"
            if not self._publish(topic, [codec.dumps(job.plan.payload)]):
                self._lane_failed(pending, "MQTT broker unreachable", used=1)

    def _lane_done(self, pending: _Pending) -> None:
        """The lane command's acknowledgement (network thread)."""
        job = pending.job
        assert job is not None and job.plan is not None
        ctl = job.ctl
        publish: list[_Pending] = []
        with self._lane_lock:
            if ctl.pending is not pending:
                return  # timed out meanwhile: its retry is under way
            ctl.pending = None
            job.batch.inflight.discard(job)
            self._applied(ctl, job.plan)
            ctl.quick_left = 0
            self._complete_locked(job.batch, job.index, CommandResult(job.command.command_id, True, job.plan.detail, 1))
            self._lane_free(ctl, publish)
        self._publish_lane(publish)

    def _lane_failed(self, pending: _Pending, detail: str, *, used: int, wait: bool = True) -> None:
        """The lane command got no answer (or the device rebooted): `send` takes it over."""
        job = pending.job
        assert job is not None
        ctl = job.ctl
        publish: list[_Pending] = []
        with self._lane_lock:
            if ctl.pending is not pending:
                return
            ctl.pending = None
            job.batch.inflight.discard(job)
            if used:
                log.info("esp-rfid %s: %s (attempt 1), retrying", ctl.config.key, detail)
            self._hand_over(job, used=used, wait=wait)
            self._lane_free(ctl, publish)
        self._publish_lane(publish)

    def _lane_free(self, ctl: _Controller, publish: list[_Pending]) -> None:
        if ctl.exclusive:
            waiters, ctl.lane_waiters = ctl.lane_waiters, []
            for waiter in waiters:
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        else:
            self._start_lane(ctl, publish)

    def _hand_over(self, job: _Job, *, used: int, wait: bool) -> None:
        loop = job.batch.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self._spawn(self._retry(job, used=used, wait=wait)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry(self, job: _Job, *, used: int, wait: bool) -> None:
        if wait and used:
            await asyncio.sleep(self.retry.delay(used))
        _USED_ATTEMPTS.set(used)  # this task's own context: read by the exchange `send` runs
        try:
            result = await self.send(job.ctl.config.key, job.command)
        except (ControllerUnavailable, KeyError) as exc:
            result = CommandResult(job.command.command_id, False, str(exc), used)
        except Exception as exc:  # never leave the batch waiting
            log.exception("esp-rfid %s: command %s failed", job.ctl.config.key, job.command.command_id)
            result = CommandResult(job.command.command_id, False, f"{type(exc).__name__}: {exc}", used)
        self._complete(job.batch, job.index, result)

    def _complete(self, batch: _Batch, index: int, result: CommandResult) -> None:
        with self._lane_lock:
            self._complete_locked(batch, index, result)

    @staticmethod
    def _complete_locked(batch: _Batch, index: int, result: CommandResult) -> None:
        batch.results[index] = result
        batch.left -= 1
        if batch.left == 0 and not batch.loop.is_closed():
            batch.loop.call_soon_threadsafe(_resolve, batch.future)

    async def _hold_lane(self, ctl: _Controller) -> None:
        """Take the device for `send`: the lane starts nothing more, and its command in flight ends first."""
        with self._lane_lock:
            ctl.exclusive += 1
            waiter = None
            if ctl.pending is not None:
                waiter = asyncio.get_running_loop().create_future()
                ctl.lane_waiters.append(waiter)
        if waiter is not None:
            try:
                await waiter
            except BaseException:
                self._release_lane(ctl)
                raise

    def _release_lane(self, ctl: _Controller) -> None:
        publish: list[_Pending] = []
        with self._lane_lock:
            ctl.exclusive -= 1
            if not ctl.exclusive:
                self._start_lane(ctl, publish)
        self._publish_lane(publish)

    async def read_users(self, controller_key: str, command_id: str = "read-users") -> UserList:
        """Read the cards a device holds; raises ``ControllerUnavailable`` if it does not answer."""
        ctl = self._get(controller_key)
        result = await self.send(controller_key, ListUsers(command_id))
        if not result.ok:
            raise ControllerUnavailable(f"{controller_key} did not list its users: {result.detail}", controller_key)
        return self._user_list(ctl)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._controllers)

    def held_users(self, controller_key: str) -> UserList:
        """What the driver last read back or wrote (exact right after a ``ListUsers``)."""
        return self._user_list(self._get(controller_key))

    def _user_list(self, ctl: _Controller) -> UserList:
        windows = {
            uid: (codec.from_epoch(rec.validsince), codec.from_epoch(rec.validuntil))
            for uid, rec in ctl.held.items()
            if rec.validuntil > rec.validsince
        }
        return UserList(ctl.config.key, frozenset(ctl.held), self._clock(), windows)

    async def _dispatch(self, ctl: _Controller, command: Command) -> CommandResult:
        cid = command.command_id
        if isinstance(command, Grant | Revoke):
            return await self._write(ctl, command)
        if isinstance(command, Unlock):
            if command.door_output != 1:
                return CommandResult(cid, False, "esp-rfid opendoor releases relay 1 only")
            attempts = await self._exchange(ctl, [codec.opendoor(ctl.config.doorip)], "opendoor")
            return CommandResult(cid, True, "door released for the device's configured relay time", attempts)
        if isinstance(command, FullSync):
            return await self._full_sync(ctl, command)
        if isinstance(command, HoldOpen):  # the firmware only pulses its relay (opendoor)
            return CommandResult(cid, True, "esp-rfid cannot hold a door open: free mode is not enforced here")
        if isinstance(command, ListUsers):
            records, attempts = await self._list(ctl)
            previous = ctl.held
            ctl.held = {}
            for rec in records:
                old = previous.get(rec.uid)
                if old is not None and rec.pincode is None:
                    rec.pincode = old.pincode  # the firmware does not echo PINs
                ctl.held[rec.uid] = rec
            self._emit(self._user_list(ctl))
            return CommandResult(cid, True, f"{len(records)} users", attempts)
        raise TypeError(f"unsupported command {type(command).__name__}")

    def _spell(self, ctl: _Controller, card_format: str, value: str) -> str | None:
        return codec.spell_for_reader(ctl.config.reader, card_format, value)

    def _unreadable(self, ctl: _Controller, command: Grant | Revoke) -> CommandResult:
        detail = (
            f"nothing to store: a {command.credential_format} card cannot be read by "
            f"this device's {ctl.config.reader} reader"
        )
        log.info("esp-rfid %s: %s (command %s)", ctl.config.key, detail, command.command_id)
        return CommandResult(command.command_id, True, detail)

    def _plan(self, ctl: _Controller, command: Grant | Revoke) -> _Plan | CommandResult:
        """What to write for a grant or revoke given the driver's shadow, or the result if there is
        nothing to send."""
        if isinstance(command, Revoke):
            return self._plan_revoke(ctl, command)
        grant = command
        try:
            codec.acctype_key(grant.door_output)
        except ValueError as exc:
            return CommandResult(grant.command_id, False, str(exc))
        uid = self._spell(ctl, grant.credential_format, grant.credential_uid)
        if uid is None:
            return self._unreadable(ctl, grant)
        since, until = codec.epoch(grant.valid_from), codec.epoch(grant.valid_until)
        current = ctl.held.get(uid)
        others = {d: a for d, a in (current.acctypes if current else {}).items() if d != grant.door_output and a}
        if others and current is not None and (current.validsince, current.validuntil) != (since, until):
            return CommandResult(
                grant.command_id,
                False,
                f"card {uid} already holds relays {sorted(others)} with another window; "
                "esp-rfid keeps one window per card",
            )
        record = codec.UserRecord(
            uid=uid,
            user=grant.user_label,
            acctypes={**others, grant.door_output: codec.ACC_ALWAYS},
            validsince=since,
            validuntil=until,
            pincode=grant.pin,
        )
        return _Plan(codec.adduser(ctl.config.doorip, record), "adduser", uid, record, "adduser acknowledged")

    def _plan_revoke(self, ctl: _Controller, revoke: Revoke) -> _Plan | CommandResult:
        uid = self._spell(ctl, revoke.credential_format, revoke.credential_uid)
        if uid is None:
            return self._unreadable(ctl, revoke)
        current = ctl.held.get(uid)
        remaining = {d: a for d, a in (current.acctypes if current else {}).items() if d != revoke.door_output and a}
        if current is not None and remaining:
            record = codec.UserRecord(
                current.uid, current.user, remaining, current.validsince, current.validuntil, current.pincode
            )
            return _Plan(
                codec.adduser(ctl.config.doorip, record), "adduser", uid, record, f"relays {sorted(remaining)} kept"
            )
        return _Plan(codec.deletuid(ctl.config.doorip, uid), "deletuid", uid, None, "deletuid acknowledged")

    @staticmethod
    def _applied(ctl: _Controller, plan: _Plan) -> None:
        if plan.record is None:
            ctl.held.pop(plan.uid, None)
        else:
            ctl.held[plan.uid] = plan.record

    async def _write(self, ctl: _Controller, command: Grant | Revoke) -> CommandResult:
        plan = self._plan(ctl, command)
        if isinstance(plan, CommandResult):
            return plan
        attempts = await self._exchange(ctl, [plan.payload], plan.expect)
        self._applied(ctl, plan)
        return CommandResult(command.command_id, True, plan.detail, attempts)

    async def _full_sync(self, ctl: _Controller, sync: FullSync) -> CommandResult:
        records: dict[str, codec.UserRecord] = {}
        conflicts: set[str] = set()
        unreadable = 0
        for grant in sync.grants:
            uid = self._spell(ctl, grant.credential_format, grant.credential_uid)
            if uid is None:
                unreadable += 1
                continue
            if grant.door_output > codec.MAX_DOORS:
                conflicts.add(uid)
                continue
            since, until = codec.epoch(grant.valid_from), codec.epoch(grant.valid_until)
            rec = records.get(uid)
            if rec is None:
                records[uid] = codec.UserRecord(
                    uid, grant.user_label, {grant.door_output: codec.ACC_ALWAYS}, since, until, grant.pin
                )
            elif (rec.validsince, rec.validuntil) != (since, until):
                conflicts.add(uid)
            else:
                rec.acctypes[grant.door_output] = codec.ACC_ALWAYS
                rec.pincode = rec.pincode or grant.pin
        for uid in conflicts:  # fail secure: a card we cannot represent gets nothing on this device
            records.pop(uid, None)
        listed, attempts = await self._list(ctl)
        held = {rec.uid: rec for rec in listed}
        ctl.held = dict(held)  # exact as of the read-back; each repair below updates it
        changes: dict[str, list[str]] = {"added": [], "rewritten": [], "removed": []}
        for uid in sorted(set(held) - set(records)):
            attempts += await self._exchange(ctl, [codec.deletuid(ctl.config.doorip, uid)], "deletuid")
            ctl.held.pop(uid, None)
            changes["removed"].append(uid)
        for uid, rec in records.items():
            current = held.get(uid)
            if current is not None and _same_record(current, rec):
                continue
            attempts += await self._exchange(ctl, [codec.adduser(ctl.config.doorip, rec)], "adduser")
            ctl.held[uid] = rec
            changes["added" if current is None else "rewritten"].append(uid)
        changes = {k: v for k, v in changes.items() if v}
        summary = f"{len(records)} users wanted, {sum(map(len, changes.values()))} writes"
        if unreadable:
            summary += f"; {unreadable} grant(s) for cards this reader cannot read left out"
        if conflicts:
            return CommandResult(
                sync.command_id,
                False,
                f"{summary}; left out (relay out of range or several windows for one card): "
                + ", ".join(sorted(conflicts)),
                attempts,
                changes,
            )
        return CommandResult(sync.command_id, True, summary, attempts, changes)

    async def _list(self, ctl: _Controller) -> tuple[list[codec.UserRecord], int]:
        payloads = [codec.getuserlist(ctl.config.doorip), codec.deletuid(ctl.config.doorip, FENCE_UID)]
        collected: list[codec.UserRecord] = []
        topic_lock = self._list_locks.setdefault(ctl.config.topic, asyncio.Lock())
        async with topic_lock:
            attempts = await self._exchange(ctl, payloads, "deletuid", collect=collected)
        return collected, attempts

    async def _exchange(
        self,
        ctl: _Controller,
        payloads: list[dict[str, Any]],
        expect: str,
        collect: list[codec.UserRecord] | None = None,
    ) -> int:
        """Publish ``payloads`` and wait for the ``expect`` reply; retry; return the attempts used."""
        loop = asyncio.get_running_loop()
        topic = f"{ctl.config.topic}/{codec.CMD}"
        encoded = [codec.dumps(p) for p in payloads]
        detail = ""
        attempt = sent = _USED_ATTEMPTS.get()
        reboots = 0
        while attempt < self.retry.max_attempts:
            quick = ctl.quick_left > 0 and self._just_booted(ctl)  # it may not listen yet: ask again soon
            timeout = self.retry.boot_ack_timeout if quick else self.retry.ack_timeout
            if quick:
                ctl.quick_left -= 1
            else:
                attempt += 1
            sent += 1
            records: list[codec.UserRecord] | None = [] if collect is not None else None
            future = loop.create_future()
            pending = _Pending(loop, future, expect, records)
            ctl.pending = pending  # before publishing: a fast reply must find it
            try:
                if self._publish(topic, encoded):
                    await asyncio.wait_for(future, timeout)
                    if pending.rebooted:
                        detail = "the device rebooted"
                        reboots += 1
                        if not quick and reboots <= 3:
                            attempt -= 1  # not the device's fault (unless it keeps rebooting)
                        continue
                    if collect is not None and records is not None:
                        collect.extend(records)
                    ctl.quick_left = 0  # it listens: back to the normal schedule
                    return sent
                detail = "MQTT broker unreachable"
            except TimeoutError:
                detail = f"no {expect} reply within {timeout:g}s"
            finally:
                ctl.pending = None
            if quick:
                log.debug("esp-rfid %s: %s just after its boot, asking again", ctl.config.key, detail)
            elif attempt < self.retry.max_attempts:
                log.info("esp-rfid %s: %s (attempt %d), retrying", ctl.config.key, detail, attempt)
                await asyncio.sleep(self.retry.delay(attempt))
        raise _Failed(f"{detail} after {self.retry.max_attempts} attempts", sent)

    def _just_booted(self, ctl: _Controller) -> bool:
        boot = ctl.state.last_boot
        return boot is not None and (self._clock() - boot).total_seconds() < self.retry.boot_window

    def _publish(self, topic: str, payloads: list[bytes]) -> bool:
        client = self._client
        if client is None or not self.connected:
            return False
        # QoS 0: the device's own reply is the acknowledgement that counts (a missing one is
        # retried), the session is clean (nothing is queued for a device that is away), and the
        # device answers at QoS 0 too. With QoS 1 the broker's PUBACK and the device's reply
        # went to us as two small writes in a row, and a broker that leaves Nagle's algorithm on
        # (Mosquitto's default) held the reply for our delayed ACK: about 43 ms per command,
        # 23 commands/s to one controller, against about 1,900/s now (bench/README.md).
        for payload in payloads:
            info = client.publish(topic, payload, qos=0)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
        return True

    def _get(self, key: str) -> _Controller:
        with self._lock:
            ctl = self._controllers.get(key)
        if ctl is None:
            raise KeyError(f"unknown esp-rfid controller {key!r}")
        return ctl

    # ------------------------------------------------------------------ network thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if not self._down_logged:
                log.warning("MQTT broker %s refused the connection: %s", self.settings.safe_url, reason_code)
                self._down_logged = True
            return
        with self._lock:
            topics = list(self._by_topic)
        subs = [(f"{t}/{suffix}", 1) for t in topics for suffix in (codec.SEND, codec.AVTY)]
        with self._lock:
            self._unacked_subs.clear()
            for start in range(0, len(subs), 200):
                _rc, mid = client.subscribe(subs[start : start + 200])
                if mid is not None:
                    self._unacked_subs.add(mid)
            if not self._unacked_subs:
                self._connected.set()
        if self._down_logged:
            log.warning("MQTT broker %s is reachable again", self.settings.safe_url)
            self._down_logged = False
        else:
            log.info("connected to MQTT broker %s", self.settings.safe_url)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._down_logged:
            log.warning("cannot reach MQTT broker %s; retrying in the background", self.settings.safe_url)
            self._down_logged = True

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._lock:
            self._unacked_subs.discard(mid)
            if not self._unacked_subs:
                self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if self._started and not self._down_logged:
            log.warning("lost MQTT broker %s (%s); reconnecting in the background", self.settings.safe_url, reason_code)
            self._down_logged = True

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # a bad message must never kill paho's network thread
            log.exception("esp-rfid: unexpected error handling a message on %s", msg.topic)
            self.dropped += 1

    def _drop(self, topic: str, reason: str) -> None:
        """Log a discarded message, at most once a minute per reason at warning level."""
        self.dropped += 1
        now = time.monotonic()
        if now - self._drop_log.get(reason, -3600.0) >= 60.0:
            self._drop_log[reason] = now
            log.warning("esp-rfid: dropped message on %s: %s", topic, reason)
        else:
            log.debug("esp-rfid: dropped message on %s: %s", topic, reason)

    def _handle(self, topic: str, payload: bytes, retained: bool) -> None:
        if len(payload) > codec.MAX_PAYLOAD:
            self._drop(topic, f"oversized payload ({len(payload)} bytes)")
            return
        base, _, suffix = topic.rpartition("/")
        with self._lock:
            keys = list(self._by_topic.get(base, ()))
            candidates = [self._controllers[k] for k in keys]
        if not candidates or suffix not in (codec.SEND, codec.AVTY):
            self._drop(topic, "topic of no registered controller")
            return
        if suffix == codec.AVTY:
            self._handle_avty(topic, payload, candidates)
            return
        if retained:
            self._drop(topic, "retained message on a send topic (stale)")
            return
        try:
            data = codec.loads(payload)
            inbound = codec.parse_send_data(data)
        except codec.MalformedMessage as exc:
            self._drop(topic, f"malformed: {exc}")
            return
        if inbound is None:
            log.debug("esp-rfid: ignored message on %s: %s", topic, payload[:200])
            return
        ctl = self._attribute(inbound, candidates)
        if ctl is None:
            self._drop(topic, "sender does not match the controller's IP/hostname (spoofed or misrouted)")
            return
        self._apply(ctl, inbound, data)

    def _attribute(self, inbound: codec.Inbound, candidates: list[_Controller]) -> _Controller | None:
        """Which device sent this: by IP when the message has one, else by hostname.

        ``userfile`` messages carry neither; on a shared topic they belong to the one device whose
        user list is being read (list reads are serialised per topic).
        """
        if isinstance(inbound, codec.UserFile) and len(candidates) > 1 and inbound.ip is None:
            listing = [c for c in candidates if c.pending is not None and c.pending.records is not None]
            return listing[0] if len(listing) == 1 else None
        ip = getattr(inbound, "ip", None)
        hostname = getattr(inbound, "hostname", None)
        matches = [
            ctl
            for ctl in candidates
            if (ip is None or ctl.config.doorip == ip)
            and (hostname is None or ctl.config.hostname is None or ctl.config.hostname == hostname)
        ]
        return matches[0] if len(matches) == 1 else None

    def _handle_avty(self, topic: str, payload: bytes, candidates: list[_Controller]) -> None:
        if len(candidates) > 1:
            log.debug("esp-rfid: availability on shared topic %s cannot name a device; heartbeats decide", topic)
            return
        if not payload:
            return  # a retained message being cleared
        try:
            online = codec.parse_avty(payload)
        except codec.MalformedMessage as exc:
            self._drop(topic, str(exc))
            return
        ctl = candidates[0]
        if ctl.state.online is not online:
            if online:
                log.info("esp-rfid %s is online", ctl.config.key)
            else:
                log.warning("esp-rfid %s went offline (last will)", ctl.config.key)
        ctl.state.online = online
        self._emit(Availability(ctl.config.key, online, self._clock()))

    def _apply(self, ctl: _Controller, inbound: codec.Inbound, data: dict[str, Any]) -> None:
        key = ctl.config.key
        now = self._clock()
        pending = ctl.pending
        if isinstance(inbound, codec.Presence):
            ctl.state.last_seen = now
            ctl.state.ip = inbound.ip or ctl.state.ip
            ctl.state.uptime_s = inbound.uptime
            if inbound.boot:
                ctl.state.last_boot = now
                ctl.quick_left = self.retry.boot_quick_tries
                if pending is not None and pending.job is not None:  # lost with the device's old session
                    self._lane_failed(pending, "the device rebooted", used=0, wait=False)
                elif pending is not None:
                    pending.rebooted = True
                    pending.wake()
                self._emit(Booted(key, now))
            else:
                self._emit(Heartbeat(key, now, inbound.uptime, inbound.ip))
        elif isinstance(inbound, codec.Ack):
            if pending is not None and pending.expect == inbound.command:
                if pending.job is not None:
                    self._lane_done(pending)
                else:
                    pending.wake()
            else:
                log.debug("esp-rfid %s: unsolicited %s acknowledgement", key, inbound.command)
        elif isinstance(inbound, codec.UserFile):
            if pending is not None and pending.records is not None:
                pending.records.append(inbound.record)
        elif isinstance(inbound, codec.Access):
            remote = inbound.username == codec.REMOTE_UNLOCK_USER and not inbound.uid
            if remote and pending is not None and pending.expect == "opendoor":
                pending.wake()
            for door, state in enumerate(inbound.states, start=1):
                kind: Any = codec.access_kind(state)
                self._emit(
                    DoorEvent(
                        key,
                        kind,
                        inbound.uid or None,
                        door,
                        now,
                        dict(data),
                        codec.reader_spellings(ctl.config.reader),
                    )
                )
        elif isinstance(inbound, codec.LogEvent):
            kind = codec.log_event_kind(inbound)
            if kind is not None:
                self._emit(DoorEvent(key, kind, None, None, now, dict(data)))

    def _emit(self, report: Report) -> None:
        for callback in list(self._callbacks):
            try:
                callback(report)
            except Exception:
                log.exception("esp-rfid: report callback failed for %s", type(report).__name__)


def _same_record(held: codec.UserRecord, wanted: codec.UserRecord) -> bool:
    """Whether the device's copy of a card already says what we would write (PINs compared only
    when the device echoes them)."""

    def relays(rec: codec.UserRecord) -> dict[int, int]:
        return {d: a for d, a in rec.acctypes.items() if a}

    return (
        relays(held) == relays(wanted)
        and (held.validsince, held.validuntil) == (wanted.validsince, wanted.validuntil)
        and held.user == wanted.user
        and (held.pincode is None or held.pincode == wanted.pincode)
    )
