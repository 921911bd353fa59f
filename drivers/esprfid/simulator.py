"""Emulated esp-rfid 2.x door controllers that speak the firmware's MQTT dialect.

Each ``SimulatedController`` behaves like one device: it keeps its cards (in flash on the real
device, so a reboot keeps them), decides every badge presentation locally against its own clock
(controllers enforce ``validsince``/``validuntil`` while the network is down), answers the
commands the firmware answers, silently drops what the firmware drops (not JSON, no ``cmd``, a
``doorip`` that is not its IP), publishes ``boot`` on every connection, a heartbeat every
``heartbeat_interval`` seconds, and retained ``online``/``offline`` availability.

Two ways to connect them, because a last will belongs to a connection:

* ``solo``: one MQTT connection per device, each with its own last will; going offline closes
  the socket without DISCONNECT and the broker itself publishes ``offline``. Each connection has a
  paho network thread, so this is for tens of devices (tests, small demos).
* ``hub``: one connection serves every device (a wildcard subscription when the devices share a
  prefix), so 1,000 devices cost one socket and two threads on a 2-core machine. Per-device wills
  are impossible on a shared connection: a device taken offline stops answering and beating, and
  the hub publishes its retained ``offline`` on its behalf, as the broker would; if the whole hub
  process dies, the gateway notices through missed heartbeats.

Three behaviours follow the firmware's own source rather than what a gateway would like:

* a presented card (``present_card``) is spelled by the configured reader chip as the firmware's
  reading loop does it, then looked up as a file of exactly that name: MFRC522 and PN532 append
  each UID byte as Arduino's ``String(byte, HEX)`` (lower case, no leading zero), the RDM6300
  prints its 5-byte tag as ``%02x`` per byte, a Wiegand reader gives the decoded code in decimal;
* ``adduser`` writes the command's JSON as received to the card's file, and ``getuserlist``
  re-publishes each file as it is, so cards added over MQTT are listed in the ``adduser`` shape
  and cards added on the device's web page (``add_user_from_web``) in the ``userfile`` shape;
* on (re)connecting, the device publishes availability and ``boot`` first and subscribes to its
  command topic only then: a command sent in answer to the boot message may be lost.

Outside the window the device reports ``Expired`` (the firmware's word for a card it knows but may
not let in now), ``Disabled`` for acctype 0, ``Admin`` for 99 (not limited by the window).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from drivers.esprfid import codec
from drivers.mqtt import MqttSettings, make_client

log = logging.getLogger("drivers.esprfid.simulator")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    topic: str
    ip: str
    hostname: str
    doors: int = 1
    door_names: tuple[str, ...] = ()
    heartbeat_interval: float = 180.0
    availability: bool = True  # the firmware's Home Assistant option: retained online/offline on <topic>/avty
    log_events: bool = True  # the firmware's "send logs over MQTT" option (tamper, unknown tag)
    reader: str = "mfrc522"  # the firmware's readerType, by chip name
    # Between publishing boot and subscribing to <topic>/cmd: a real ESP8266 on WiFi takes tens of
    # milliseconds, and with the firmware's Home Assistant option it first publishes its discovery
    # messages with half-second pauses. Commands sent in that gap are lost, as on the device.
    boot_to_subscribe: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.doors <= codec.MAX_DOORS:
            raise ValueError(f"doors must be 1..{codec.MAX_DOORS}")
        if self.reader not in READER_CHIPS:
            raise ValueError(f"unknown reader {self.reader!r}")


# readerType 0..6 of the firmware's hardware settings, by the chips each one polls.
READER_CHIPS: dict[str, tuple[str, ...]] = {
    "mfrc522": ("mfrc522",),
    "wiegand": ("wiegand",),
    "pn532": ("pn532",),
    "rdm6300": ("rdm6300",),
    "rdm6300+mfrc522": ("rdm6300", "mfrc522"),
    "rdm6300+wiegand": ("rdm6300", "wiegand"),
    "rdm6300+pn532": ("rdm6300", "pn532"),
}


def firmware_uid(reader: str, card: bytes | int) -> str:
    """The UID string the firmware builds for ``card`` on this reader (its file name for the card).

    ``card`` is the card's serial bytes (ISO 14443: 4, 7 or 10 bytes; an EM4100 tag: 5 bytes) or, for
    a Wiegand reader, the code the Wiegand library decoded."""
    chips = READER_CHIPS[reader]
    if isinstance(card, int):
        if "wiegand" not in chips:
            raise ValueError(f"a {reader} reader has no Wiegand input")
        return str(card)  # String(wg.getCode(), DEC)
    if len(card) == 5:
        if "rdm6300" not in chips:
            raise ValueError(f"a {reader} reader cannot read a 125 kHz tag")
        return "".join(f"{b:02x}" for b in card)  # GetHexID: sprintf("%02x" x 5)
    if not {"mfrc522", "pn532"} & set(chips):
        raise ValueError(f"a {reader} reader cannot read a 13.56 MHz card")
    return "".join(f"{b:x}" for b in card)  # uid += String(uidByte[i], HEX), no zero padding


def benchmark_ip(index: int) -> str:
    """Device IPs from 198.18.0.0/15 (RFC 2544): only ever strings in JSON, never dialled."""
    return f"198.18.{(index // 250) % 256}.{index % 250 + 1}"


def _later(delay: float, fn: Callable[..., object], *args: Any) -> None:
    """Run ``fn`` after ``delay`` seconds off paho's thread (paho's calls are thread-safe), or now."""
    if delay <= 0:
        fn(*args)
        return
    timer = threading.Timer(delay, fn, args)
    timer.daemon = True
    timer.start()


class _Cards(Mapping[str, codec.UserRecord]):
    """A snapshot of a device's card files, read as user records on access."""

    def __init__(self, files: dict[str, dict[str, Any]]) -> None:
        self._files = files

    def __getitem__(self, uid: str) -> codec.UserRecord:
        return codec.UserRecord.from_fields(self._files[uid])

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


class _Link:
    """How a device reaches the broker; implemented by the solo and hub transports."""

    client: mqtt.Client | None = None
    _last_sent: mqtt.MQTTMessageInfo | None = None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        client = self.client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=0, retain=retain)
        self._last_sent = info
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        """Disconnect cleanly once what was published has reached the socket (paho writes in order,
        and stopping its loop right after ``disconnect()`` could drop the last messages)."""
        client, self.client = self.client, None
        if client is None:
            return
        last = self._last_sent
        if last is not None and last.rc == mqtt.MQTT_ERR_SUCCESS and not last.is_published():
            with contextlib.suppress(RuntimeError, ValueError):
                last.wait_for_publish(timeout=10)
        client.disconnect()
        client.loop_stop()

    def go_offline(self, device: SimulatedController) -> None:
        raise NotImplementedError

    def come_back(self, device: SimulatedController) -> None:
        raise NotImplementedError


class SimulatedController:
    """One emulated device; thread-safe (paho thread, heartbeat thread and caller)."""

    def __init__(self, config: DeviceConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.files: dict[str, dict[str, Any]] = {}  # the device's /P/<uid> files, as written
        self.paused = False  # a hung command processor: commands are lost, heartbeats go on
        self.connected = False
        self.commands_handled = 0
        self.commands_dropped = 0
        self.door_releases = 0
        self.boots = 0
        self._booted_at = clock()
        self._next_beat = time.monotonic() + config.heartbeat_interval
        self._lock = threading.RLock()
        self.link: _Link | None = None

    @property
    def topic(self) -> str:
        return self.config.topic

    @property
    def users(self) -> Mapping[str, codec.UserRecord]:
        """The stored cards by file name, each parsed when read (for tests and the demo)."""
        with self._lock:
            return _Cards(dict(self.files))

    def add_user_from_web(self, uid: str, user: str, validsince: int, validuntil: int, acctype: int = 1) -> None:
        """A card entered on the device's own web page: stored in the ``userfile`` shape."""
        with self._lock:
            self.files[uid] = {
                "command": "userfile",
                "uid": uid,
                "user": user,
                "acctype": acctype,
                "acctype2": None,
                "acctype3": None,
                "acctype4": None,
                "validsince": validsince,
                "validuntil": validuntil,
            }

    def _publish(self, suffix: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        if self.link is None or not self.connected:
            return  # the firmware checks mqttClient.connected() before publishing
        body = payload.encode() if isinstance(payload, str) else codec.dumps(payload)
        self.link.publish(f"{self.config.topic}/{suffix}", body, retain)

    def _now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ connection events

    def on_connected(self) -> None:
        """What the firmware does in onMqttConnect: availability, then the boot message; the link
        subscribes to the command topic only after this (as the firmware does)."""
        with self._lock:
            self.connected = True
            self.boots += 1
            if self.config.availability:
                self._publish(codec.AVTY, codec.ONLINE, retain=True)
            self._publish(codec.SEND, codec.boot_message(self._now(), self.config.ip, self.config.hostname))
            self._next_beat = time.monotonic() + self.config.heartbeat_interval

    def on_disconnected(self) -> None:
        self.connected = False

    def beat_if_due(self, monotonic_now: float) -> None:
        if not self.connected or monotonic_now < self._next_beat:
            return
        with self._lock:
            self._next_beat = monotonic_now + self.config.heartbeat_interval
            uptime = max(0, int(self.clock() - self._booted_at))
            self._publish(
                codec.SEND, codec.heartbeat_message(self._now(), uptime, self.config.ip, self.config.hostname)
            )

    # ------------------------------------------------------------------ commands

    def handle_command(self, payload: bytes) -> None:
        """Apply one ``<topic>/cmd`` message the way the firmware does; never raises."""
        try:
            data = codec.loads(payload)
        except codec.MalformedMessage:
            self.commands_dropped += 1
            return
        command = data.get("cmd")
        if not isinstance(command, str) or data.get("doorip") != self.config.ip or self.paused:
            self.commands_dropped += 1
            return
        with self._lock:
            handler = self._handlers().get(command)
            if handler is None:
                self.commands_dropped += 1
                return
            try:
                handler(data)
            except codec.MalformedMessage:
                self.commands_dropped += 1
                return
            except Exception:  # the firmware has no way to report a failure either: log and go on
                log.exception("simulated %s: command %r failed", self.config.hostname, command)
                self.commands_dropped += 1
                return
            self.commands_handled += 1

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "adduser": self._adduser,
            "deletuid": self._deletuid,
            "deletusers": self._deletusers,
            "getuserlist": self._list,
            "listusr": self._list,
            "opendoor": self._opendoor,
            # off the network thread: a solo link stops that thread while rebooting
            "reboot": lambda _data: threading.Thread(target=self.reboot, daemon=True).start(),
        }

    def _ack(self, command: str) -> None:
        self._publish(codec.SEND, codec.ack_message(command, self.config.ip, self.config.hostname))

    def _adduser(self, data: dict[str, Any]) -> None:
        uid = data.get("uid")
        if not isinstance(uid, str | int) or isinstance(uid, bool) or str(uid) == "":
            raise codec.MalformedMessage("adduser without uid")
        self.files[str(uid)] = dict(data)  # the firmware prints the command's JSON into /P/<uid>
        self._ack("adduser")

    def _deletuid(self, data: dict[str, Any]) -> None:
        uid = data.get("uid")
        if uid is not None:
            self.files.pop(str(uid), None)
        self._ack("deletuid")

    def _deletusers(self, _data: dict[str, Any]) -> None:
        self.files.clear()
        self._ack("deletusers")

    def _list(self, _data: dict[str, Any]) -> None:
        for uid in sorted(self.files):
            self._publish(codec.SEND, self.files[uid])  # each file re-published as stored

    def _opendoor(self, _data: dict[str, Any]) -> None:
        self.door_releases += 1
        names = self._door_names()
        self._publish(
            codec.SEND,
            codec.access_message(
                self._now(), True, ["Always"], codec.REMOTE_UNLOCK_USER, "", self.config.hostname, names[:1]
            ),
        )

    # ------------------------------------------------------------------ the physical side

    def _door_names(self) -> list[str]:
        names = list(self.config.door_names)
        return names + [f"door{i}" for i in range(len(names) + 1, self.config.doors + 1)]

    def decide(self, uid: str) -> list[str]:
        """The access state of every relay for ``uid`` now, by the device's own clock."""
        now = self.clock()
        with self._lock:
            data = self.files.get(uid)
        record = codec.UserRecord.from_fields(data) if data is not None else None
        if record is None:
            return ["Denied"] * self.config.doors
        states = []
        for door in range(1, self.config.doors + 1):
            acctype = record.acctype(door)
            if acctype == codec.ACC_ADMIN:
                states.append("Admin")
            elif acctype == codec.ACC_ALWAYS:
                states.append("Always" if record.validsince <= now < record.validuntil else "Expired")
            else:
                states.append("Disabled")
        return states

    def present_card(self, card: bytes | int, door: int = 1) -> str:
        """A physical card is held to the reader: the reader spells it, then as ``present``."""
        return self.present(firmware_uid(self.config.reader, card), door)

    def present(self, uid: str, door: int = 1) -> str:
        """A UID as the reader produced it: decide locally, publish the access event, return the door's state.

        The decision stands even while disconnected (the relay acts offline); only the event is lost.
        """
        if not 1 <= door <= self.config.doors:
            raise ValueError(f"this device has doors 1..{self.config.doors}")
        states = self.decide(uid)
        with self._lock:
            data = self.files.get(uid)
            known = data is not None
            username = str(data.get("user") or "") if data is not None else "Unknown"
            if not known and self.config.log_events:
                self._publish(
                    codec.SEND,
                    codec.log_message(
                        "WARN", "rfid", "Unknown rfid tag is scanned", self._now(), self.config.hostname, uid
                    ),
                )
            self._publish(
                codec.SEND,
                codec.access_message(
                    self._now(), known, states, username, uid, self.config.hostname, self._door_names()
                ),
            )
        return states[door - 1]

    def force_door(self) -> None:
        """The door sensor opens without a granted card (logged by the firmware as tamper)."""
        if self.config.log_events:
            self._publish(
                codec.SEND, codec.log_message("WARN", "tamper", "Door was tampered!", self._now(), self.config.hostname)
            )

    def hold_door_open(self) -> None:
        if self.config.log_events:
            desc = "Door wasn't closed within max open time!"
            self._publish(codec.SEND, codec.log_message("WARN", "tamper", desc, self._now(), self.config.hostname))

    # ------------------------------------------------------------------ power

    def go_offline(self) -> None:
        """Lose power or network: no clean MQTT disconnect, so the last will fires."""
        if self.link is not None:
            self.link.go_offline(self)

    def come_back(self) -> None:
        """Power or network returns: reconnect, announce availability and boot."""
        self._booted_at = self.clock()
        if self.link is not None:
            self.link.come_back(self)

    def reboot(self) -> None:
        """Restart: users survive (the firmware stores them in flash), uptime starts again."""
        self.go_offline()
        self.come_back()


# --------------------------------------------------------------------------- transports


class _SoloLink(_Link):
    """One MQTT connection, with its own last will, for one device."""

    def __init__(self, settings: MqttSettings, device: SimulatedController) -> None:
        self.settings = settings
        self.device = device
        self.client: mqtt.Client | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        device = self.device
        will = (f"{device.topic}/{codec.AVTY}", codec.OFFLINE) if device.config.availability else None
        client = make_client(self.settings, client_id_prefix=f"esp-rfid-{device.config.hostname}", will=will)

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            if not rc.is_failure:
                device.on_connected()  # boot first, as the firmware's onMqttConnect does...
                _later(device.config.boot_to_subscribe, c.subscribe, f"{device.topic}/{codec.CMD}", 1)  # ...then listen

        def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
            self.ready.set()

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            device.on_disconnected()
            self.ready.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = on_subscribe
        client.on_message = lambda c, u, msg: device.handle_command(bytes(msg.payload))
        self.client = client
        client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        client.loop_start()

    def go_offline(self, device: SimulatedController) -> None:
        client, self.client = self.client, None
        device.on_disconnected()
        self.ready.clear()
        if client is None:
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # cut TCP under paho: no DISCONNECT packet, so the will fires
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client.loop_stop()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def come_back(self, device: SimulatedController) -> None:
        if self.client is None:
            self.start()

    def stop(self) -> None:
        super().stop()
        self.device.on_disconnected()


class _HubLink(_Link):
    """One MQTT connection for many devices."""

    def __init__(self, settings: MqttSettings, devices: list[SimulatedController], wildcard: str | None) -> None:
        self.settings = settings
        self.devices_by_topic: dict[str, list[SimulatedController]] = {}
        for device in devices:
            self.devices_by_topic.setdefault(device.topic, []).append(device)
            device.link = self
        self.wildcard = wildcard
        self.offline: set[int] = set()
        self.client: mqtt.Client | None = None
        self.ready = threading.Event()
        self._sub_lock = threading.Lock()
        self._unacked: set[int] = set()

    def start(self) -> None:
        client = make_client(self.settings, client_id_prefix="esp-rfid-hub", max_queued=0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client
        client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("simulator hub: broker refused the connection: %s", rc)
            return
        for devices in self.devices_by_topic.values():  # boot first, subscribe after, as the firmware
            for device in devices:
                if id(device) not in self.offline:
                    device.on_connected()
        if self.wildcard is not None:
            subs = [(f"{self.wildcard}/+/{codec.CMD}", 1)]
        else:
            subs = [(f"{topic}/{codec.CMD}", 1) for topic in self.devices_by_topic]
        delay = max((d.config.boot_to_subscribe for ds in self.devices_by_topic.values() for d in ds), default=0.0)
        _later(delay, self._subscribe, client, subs)

    def _subscribe(self, client: mqtt.Client, subs: list[tuple[str, int]]) -> None:
        with self._sub_lock:
            self._unacked.clear()
            for start in range(0, len(subs), 200):
                _rc, mid = client.subscribe(subs[start : start + 200])
                if mid is not None:
                    self._unacked.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._sub_lock:
            self._unacked.discard(mid)
            if self._unacked:
                return
        self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.ready.clear()
        for devices in self.devices_by_topic.values():
            for device in devices:
                device.on_disconnected()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        base, _, suffix = msg.topic.rpartition("/")
        if suffix != codec.CMD:
            return
        for device in self.devices_by_topic.get(base, ()):
            if id(device) not in self.offline:
                device.handle_command(bytes(msg.payload))

    def go_offline(self, device: SimulatedController) -> None:
        if device.config.availability and device.connected:
            device._publish(codec.AVTY, codec.OFFLINE, retain=True)  # what the broker would do with a will
        self.offline.add(id(device))
        device.on_disconnected()

    def come_back(self, device: SimulatedController) -> None:
        self.offline.discard(id(device))
        if self.ready.is_set():
            device.on_connected()



@dataclass
class SimulatorFleet:
    """A set of simulated devices, their connections and their heartbeat thread."""

    settings: MqttSettings
    configs: Sequence[DeviceConfig]
    mode: str = "auto"  # "solo", "hub", or "auto": solo up to 20 devices
    clock: Clock = time.time
    wildcard: str | None = None
    devices: list[SimulatedController] = field(init=False, default_factory=list)
    _links: list[_SoloLink | _HubLink] = field(init=False, default_factory=list)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _ticker: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.devices = [SimulatedController(cfg, self.clock) for cfg in self.configs]
        mode = self.mode if self.mode != "auto" else ("solo" if len(self.devices) <= 20 else "hub")
        if mode not in ("solo", "hub"):
            raise ValueError(f"unknown simulator mode {self.mode!r}")
        self.mode = mode

    def __getitem__(self, topic: str) -> SimulatedController:
        for device in self.devices:
            if device.topic == topic:
                return device
        raise KeyError(topic)

    def start(self) -> None:
        if self.mode == "solo":
            for device in self.devices:
                link = _SoloLink(self.settings, device)
                device.link = link
                self._links.append(link)
                link.start()
        else:
            hub = _HubLink(self.settings, self.devices, self.wildcard)
            self._links.append(hub)
            hub.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="esp-rfid-sim-heartbeats", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        interval = min((d.config.heartbeat_interval for d in self.devices), default=1.0)
        step = max(0.02, min(1.0, interval / 4))
        while not self._stop.wait(step):
            now = time.monotonic()
            for device in self.devices:
                device.beat_if_due(now)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(link.ready.wait(max(0.0, deadline - time.monotonic())) for link in self._links)

    def stop(self) -> None:
        """Stop every device; each says ``offline`` first, since a clean disconnect fires no will."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        for device in self.devices:
            if device.connected and device.config.availability:
                device._publish(codec.AVTY, codec.OFFLINE, retain=True)
        for link in self._links:
            link.stop()
        self._links.clear()


def build_configs(
    topics: Sequence[str] = (),
    *,
    count: int = 0,
    prefix: str | None = None,
    heartbeat_interval: float = 60.0,
    doors: int = 1,
) -> list[DeviceConfig]:
    """``topics`` may be ``TOPIC``, ``TOPIC@IP`` or ``TOPIC@IP@READER``; ``count``/``prefix`` adds
    ``prefix/0001``..."""
    configs = []
    for index, spec in enumerate(topics):
        topic, _, rest = spec.partition("@")
        ip, _, reader = rest.partition("@")
        configs.append(
            DeviceConfig(
                topic,
                ip or benchmark_ip(index),
                f"esp-rfid-{index + 1:04d}",
                doors,
                (),
                heartbeat_interval,
                reader=reader or "mfrc522",
            )
        )
    if count:
        if not prefix:
            raise ValueError("--count needs --prefix")
        base = len(configs)
        for i in range(1, count + 1):
            configs.append(
                DeviceConfig(
                    f"{prefix}/{i:04d}",
                    benchmark_ip(base + i - 1),
                    f"esp-rfid-{base + i:04d}",
                    doors,
                    (),
                    heartbeat_interval,
                )
            )
    return configs


async def run_simulators(
    url: str,
    topics: Sequence[str] = (),
    *,
    count: int = 0,
    prefix: str | None = None,
    heartbeat_interval: float = 60.0,
    doors: int = 1,
    mode: str = "auto",
    ca_file: str | None = None,
    duration: float | None = None,
    on_ready: Callable[[SimulatorFleet], None] | None = None,
) -> SimulatorFleet:
    """Run emulated devices until cancelled (or for ``duration`` seconds); returns the stopped fleet."""
    settings = MqttSettings.from_url(url, ca_file=ca_file)
    configs = build_configs(topics, count=count, prefix=prefix, heartbeat_interval=heartbeat_interval, doors=doors)
    if not configs:
        raise ValueError("no device to simulate: give --topic or --count with --prefix")
    wildcard = prefix if count and not topics else None
    fleet = SimulatorFleet(settings, configs, mode=mode, wildcard=wildcard)
    fleet.start()
    try:
        ready = await asyncio.to_thread(fleet.wait_ready, 15.0)
        if not ready:
            raise ConnectionError(f"could not connect to the MQTT broker at {settings.safe_url}")
        if on_ready is not None:
            on_ready(fleet)
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:
        await asyncio.to_thread(fleet.stop)
    return fleet


def main(argv: Sequence[str] | None = None) -> int:
    """``bookgate sim esprfid``: run emulated esp-rfid devices until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="bookgate sim esprfid", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        help="base topic of one device: TOPIC, TOPIC@IP or TOPIC@IP@READER (mfrc522, pn532, wiegand, rdm6300...)",
    )
    parser.add_argument("--count", type=int, default=0, help="number of devices named PREFIX/0001...")
    parser.add_argument("--prefix", help="topic prefix for --count devices")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883", help="mqtt://user:pass@host:port or mqtts://")
    parser.add_argument("--ca-file", help="CA bundle for mqtts://")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between heartbeats (firmware: 180)")
    parser.add_argument("--doors", type=int, default=1, help="relays per device (1-4)")
    parser.add_argument(
        "--mode", choices=["auto", "solo", "hub"], default="auto", help="one connection per device, or one for all"
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def announce(fleet: SimulatorFleet) -> None:
        print(f"{len(fleet.devices)} esp-rfid device(s) online ({fleet.mode} mode); topic, doorip, hostname:")
        for device in fleet.devices[:50]:
            print(f"  {device.topic}  {device.config.ip}  {device.config.hostname}")
        if len(fleet.devices) > 50:
            print(f"  ... and {len(fleet.devices) - 50} more")
        sys.stdout.flush()

    try:
        asyncio.run(
            run_simulators(
                args.mqtt_url,
                args.topic,
                count=args.count,
                prefix=args.prefix,
                heartbeat_interval=args.heartbeat,
                doors=args.doors,
                mode=args.mode,
                ca_file=args.ca_file,
                duration=args.duration,
                on_ready=announce,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (ValueError, ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
