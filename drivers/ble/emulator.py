"""Emulated Bookgate-profile locks: real GATT servers on bumble's virtual controller.

Each ``EmulatedLock`` is a bumble ``Device`` (its own host stack and its own virtual controller)
on one ``bumble.link.LocalLink``, advertising at its address and serving the lock profile. The
gateway reaches the link through a radio: another virtual controller on the same link whose HCI
side is a TCP server (``bumble:tcp-client:HOST:PORT`` in a lock's ``adapter`` setting), the way a
USB or UART HCI dongle would be reached. So the gateway's path is the real one: bleak's API, the
bumble host stack, HCI, the link layer, ATT and GATT.

The lock side is written from the profile's specification (the docstring of
``drivers.ble.profile``), not from the gateway's code: it parses and verifies records with its own
code, keeps its counter, refuses a record whose tag does not verify (ATT error 0x80), whose counter
is not above the last accepted one (0x81) or that it cannot parse (0x82), and decides a
presentation from its own table and its own clock, the way a lock decides while the gateway is
unreachable.

Faults for tests: ``drop_on_write`` makes the lock drop the connection when the next record
arrives, before answering it (a lock that disconnects mid-write).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bumble import att, gatt
from bumble.controller import Controller
from bumble.device import Connection, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, Transport
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

log = logging.getLogger("drivers.ble.emulator")

T = TypeVar("T")

# From the profile specification.
SERVICE = "cc790000-954b-4669-9db0-bb8a30d6d15c"
RECORDS = "cc790001-954b-4669-9db0-bb8a30d6d15c"
EVENTS = "cc790002-954b-4669-9db0-bb8a30d6d15c"
STATUS = "cc790003-954b-4669-9db0-bb8a30d6d15c"
TAG = 16


@dataclass
class Entry:
    valid_from: int
    valid_until: int
    synced: bool = True


@dataclass
class LockLog:
    """What the lock did, for tests and the demo."""

    accepted: list[tuple[str, int]] = field(default_factory=list)  # (op, counter)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (ATT error, why)
    releases: list[tuple[int, int]] = field(default_factory=list)  # (output, seconds)


class EmulatedLock:
    """One lock: its key, its counters, its table of credential digests; runs on the site's loop."""

    def __init__(self, address: str, key: bytes, link: LocalLink, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) != 32:
            raise ValueError("a lock key has 32 bytes")
        self.address = address.upper()
        self._key = key
        self.clock = clock
        self.last_counter = 0
        self.event_counter = 0
        self.table: dict[tuple[int, bytes], Entry] = {}
        self.log = LockLog()
        self.drop_on_write = False
        self._controller = Controller(f"lock {self.address}", link=link)
        self.device = Device(
            name="Bookgate lock",
            address=Address(self.address),
            host=Host(self._controller, AsyncPipeSink(self._controller)),
        )
        self._events: gatt.Characteristic[bytes] = gatt.Characteristic(
            EVENTS, gatt.Characteristic.Properties.NOTIFY, gatt.Characteristic.READABLE, b""
        )
        records: gatt.Characteristic[bytes] = gatt.Characteristic(
            RECORDS,
            gatt.Characteristic.Properties.WRITE,
            gatt.Characteristic.WRITEABLE,
            gatt.CharacteristicValue(write=self._on_write),
        )
        status: gatt.Characteristic[bytes] = gatt.Characteristic(
            STATUS,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=self._status),
        )
        self.device.add_service(gatt.Service(SERVICE, [records, self._events, status]))

    async def power_on(self) -> None:
        await self.device.power_on()
        await self._advertise()
        # Like many locks, it takes more than one central: it advertises again once connected, so
        # anyone in range (a second gateway, an attacker) can connect and write.
        self.device.on("connection", lambda _c: asyncio.get_running_loop().create_task(self._advertise()))

    async def _advertise(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.start_advertising(
                auto_restart=True, advertising_interval_min=20, advertising_interval_max=40
            )

    # ------------------------------------------------------------------ the lock's own checks

    def _mac(self, domain: int, data: bytes) -> bytes:
        return hmac.new(self._key, b"BGL1" + bytes([domain]) + data, hashlib.sha256).digest()[:TAG]

    def digest(self, credential_format: str, value: str) -> bytes:
        data = b"BGL1 credential" + credential_format.encode() + b"\x1f" + value.strip().lower().encode()
        return hmac.new(self._key, data, hashlib.sha256).digest()[:TAG]

    def table_hash(self) -> bytes:
        rows = sorted((out, dig, e.valid_from, e.valid_until) for (out, dig), e in self.table.items())
        return hashlib.sha256(b"".join(struct.pack(">B16sII", *row) for row in rows)).digest()[:TAG]

    def _status(self, connection: Connection) -> bytes:
        data = struct.pack(">BQ", 1, self.last_counter)
        return data + self._mac(2, data)

    def _refuse(self, code: int, why: str) -> att.ATT_Error:
        self.log.refused.append((code, why))
        log.info("lock %s refused a record: %s", self.address, why)
        return att.ATT_Error(code)

    async def _on_write(self, connection: Connection, value: bytes) -> None:
        data = bytes(value)
        if self.drop_on_write:  # the link fails while the write is in flight: no answer leaves the lock
            self.drop_on_write = False
            await connection.disconnect()
            raise att.ATT_Error(0x0E)  # nobody receives it: the connection is gone
        if len(data) < 10 + TAG:
            raise self._refuse(0x82, "too short")
        body, tag = data[:-TAG], data[-TAG:]
        if not hmac.compare_digest(tag, self._mac(0, body)):
            raise self._refuse(0x80, "bad tag")
        version, op, counter = struct.unpack_from(">BBQ", body)
        if counter <= self.last_counter:
            raise self._refuse(0x81, f"counter {counter} not above {self.last_counter}")
        rest = body[10:]
        names = {1: "grant", 2: "revoke", 3: "unlock", 4: "sync-begin", 5: "sync-end", 6: "query"}
        sizes = {1: 25, 2: 17, 3: 3, 4: 0, 5: 0, 6: 0}
        if version != 1 or op not in names or len(rest) != sizes[op]:
            raise self._refuse(0x82, f"malformed record (version {version}, op {op}, {len(rest)} bytes)")
        self.last_counter = counter  # stored before acting: the same record is never applied twice
        if op == 1:
            output, dig, start, end = struct.unpack(">B16sII", rest)
            self.table[(output, dig)] = Entry(start, end)
        elif op == 2:
            output, dig = struct.unpack(">B16s", rest)
            self.table.pop((output, dig), None)
        elif op == 3:
            output, seconds = struct.unpack(">BH", rest)
            self.log.releases.append((output, seconds))
        elif op == 4:
            for entry in self.table.values():
                entry.synced = False
        elif op == 5:
            self.table = {k: e for k, e in self.table.items() if e.synced}
        self.log.accepted.append((names[op], counter))
        ack = struct.pack(">Q16s", counter, self.table_hash())
        asyncio.get_running_loop().create_task(self._notify(1, ack))

    async def _notify(self, kind: int, body: bytes) -> bytes:
        self.event_counter += 1
        data = struct.pack(">BBQI", 1, kind, self.event_counter, int(self.clock()) & 0xFFFFFFFF) + body
        data += self._mac(1, data)
        await self.notify_raw(data)
        return data

    async def notify_raw(self, data: bytes) -> None:
        """Send these bytes as an event notification (tests replay or forge events with it)."""
        with contextlib.suppress(Exception):  # nobody connected: the event is lost, as on a lock
            await self.device.notify_subscribers(self._events, data)

    # ------------------------------------------------------------------ things happening at the lock

    async def present(self, credential_format: str, value: str, output: int = 1) -> str:
        """A card or phone presented at the lock's reader: decided by the lock, reported."""
        entry = self.table.get((output, self.digest(credential_format, value)))
        now = self.clock()
        granted = entry is not None and entry.valid_from <= now < entry.valid_until
        fmt, val = credential_format.encode(), value.strip().lower().encode()
        body = bytes([output, len(fmt)]) + fmt + bytes([len(val)]) + val
        await self._notify(2 if granted else 3, body)
        if granted:
            self.log.releases.append((output, 5))
        return "granted" if granted else "denied"

    async def door(self, output: int, state: int) -> None:
        """The door contact changed: 0 closed, 1 open, 2 forced, 3 held open."""
        await self._notify(4, bytes([output, state]))

    async def disconnect_all(self) -> None:
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()


class LockSite:
    """A link with locks on it and the radios through which a gateway reaches them.

    Runs on its own event-loop thread (``start``); ``call`` runs a coroutine there from any thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.link = LocalLink()
        self.locks: dict[str, EmulatedLock] = {}
        self._transports: list[Transport] = []
        self._radios: list[Controller] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ble-lock-site", daemon=True)

    def start(self) -> LockSite:
        self._thread.start()
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add_lock(self, address: str, key: bytes, clock: Callable[[], float] = time.time) -> EmulatedLock:
        async def add() -> EmulatedLock:
            lock = EmulatedLock(address, key, self.link, clock=clock)
            await lock.power_on()
            return lock

        lock = self.call(add())
        self.locks[lock.address] = lock
        return lock

    def lock(self, address: str) -> EmulatedLock:
        return self.locks[address.upper()]

    def add_radio(self, port: int = 0) -> str:
        """A virtual controller on the link, its HCI on a TCP server; returns the adapter setting."""
        # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # accepted sockets inherit it; without it every HCI packet waits for a delayed ACK (~40 ms)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        bound = sock.getsockname()[1]

        async def add() -> None:
            transport = await open_tcp_server_transport_with_socket(sock)
            self._transports.append(transport)
            self._radios.append(
                Controller(f"radio {bound}", host_source=transport.source, host_sink=transport.sink, link=self.link)
            )

        self.call(add())
        return f"bumble:tcp-client:{self.host}:{bound}"

    def close(self) -> None:
        if not self._thread.is_alive():  # never started, or closed already
            return

        async def close() -> None:
            for transport in self._transports:
                server = getattr(transport, "server", None)
                if server is not None:
                    server.close()
                link = getattr(transport.sink, "transport", None)  # the central's TCP connection
                if link is not None:
                    link.close()
                with contextlib.suppress(Exception):
                    await transport.close()

        with contextlib.suppress(Exception):
            self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------- `bookgate sim ble`


def main(argv: Sequence[str]) -> int:
    """Emulated locks on a radio the gateway reaches with ``adapter: bumble:tcp-client:HOST:PORT``.

    Each lock is keyed from a key file (64 hex digits), as the gateway's ``key_file`` setting for it
    says: the key never appears on a command line."""
    import sys

    from drivers.ble.family import read_key_file

    p = argparse.ArgumentParser(prog="bookgate sim ble", description=main.__doc__)
    p.add_argument("--lock", action="append", required=True, metavar="ADDRESS=KEY_FILE", help="repeat for more locks")
    p.add_argument("--port", type=int, default=9901, help="the radio's TCP port (HCI over TCP)")
    p.add_argument("--radios", type=int, default=1, help="radios on consecutive ports, one per central")
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(list(argv))
    locks = []
    for spec in args.lock:
        address, _, path = spec.partition("=")
        try:
            locks.append((address, read_key_file(path)))
        except (OSError, ValueError) as exc:
            print(f"bookgate sim ble: {address}: unusable key file: {exc}", file=sys.stderr)
            return 2
    site = LockSite(args.host).start()
    try:
        for address, key in locks:
            site.add_lock(address, key)
        adapters = [site.add_radio(args.port + i) for i in range(max(1, args.radios))]
        print(f"emulated BLE locks {', '.join(a for a, _ in locks)}; adapters: {' '.join(adapters)}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        site.close()
    return 0
