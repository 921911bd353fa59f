"""BLE locks: the real driver, bleak's public API, bumble's host stack over HCI-over-TCP, and a lock
emulated with bumble that enforces the profile with its own code.

Every test gets a fresh link with its own radio port; nothing is mocked below bleak's API."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
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
    ListUsers,
    Revoke,
    Unlock,
)
from drivers.ble import profile
from drivers.ble.bumble_backend import BumbleClient, BumbleRadio, BumbleScanner
from drivers.ble.driver import BleDriver, LockConfig, RetryPolicy
from drivers.ble.emulator import EmulatedLock, LockSite
from tests.drivers.helpers import wait_until

T = TypeVar("T")
ADDRESS = "D4:36:39:A1:00:01"
FAST = RetryPolicy(
    scan_timeout=3.0, connect_timeout=3.0, ack_timeout=2.0, max_attempts=3, backoff_base=0.05, backoff_max=0.5
)
NOW = datetime.now(UTC)


@dataclass
class Rig:
    site: LockSite
    lock: EmulatedLock
    key: bytes
    adapter: str
    driver: BleDriver
    reports: list[object]
    loop: asyncio.AbstractEventLoop

    def send(self, command: Command) -> CommandResult:
        return self.loop.run_until_complete(self.driver.send("gate", command))

    def on_lock(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.site.call(coro)

    def of(self, kind: type) -> list:
        return [r for r in list(self.reports) if isinstance(r, kind)]


def _driver(adapter: str, key: bytes, reports: list[object], **kw: object) -> BleDriver:
    driver = BleDriver([LockConfig("gate", ADDRESS, key, adapter, **kw)], retry=FAST)  # type: ignore[arg-type]
    driver.subscribe(reports.append)
    driver.start()
    return driver


@pytest.fixture
def rig() -> Iterator[Rig]:
    site = LockSite().start()
    key = secrets.token_bytes(32)
    lock = site.add_lock(ADDRESS, key)
    adapter = site.add_radio()
    reports: list[object] = []
    driver = _driver(adapter, key, reports)
    loop = asyncio.new_event_loop()
    try:
        assert wait_until(lambda: any(isinstance(r, Availability) and r.online for r in reports), timeout=10)
        yield Rig(site, lock, key, adapter, driver, reports, loop)
    finally:
        driver.stop()
        loop.close()
        site.close()


def grant(uid: str = "04a1b2c3", start: datetime = NOW - timedelta(minutes=5), hours: int = 2) -> Grant:
    return Grant(f"g-{secrets.token_hex(3)}", 1, uid, "Bob", start, start + timedelta(hours=hours))


def test_grant_and_revoke_reach_the_lock_which_decides_by_its_own_table(rig: Rig) -> None:
    g = grant()
    result = rig.send(g)
    assert result.ok, result.detail
    entry = rig.lock.table[(1, rig.lock.digest("uid", "04a1b2c3"))]  # the lock's own digest of the card
    assert (entry.valid_from, entry.valid_until) == (int(g.valid_from.timestamp()), int(g.valid_until.timestamp()))
    assert rig.on_lock(rig.lock.present("uid", "04A1B2C3")) == "granted"
    assert rig.on_lock(rig.lock.present("uid", "04ffffff")) == "denied"
    assert wait_until(lambda: len(rig.of(DoorEvent)) == 2)
    granted, denied = rig.of(DoorEvent)
    assert (granted.kind, granted.credential_uid, granted.door_output, granted.spellings) == (
        "granted",
        "04a1b2c3",
        1,
        ("hex",),
    )
    assert (denied.kind, denied.credential_uid) == ("denied", "04ffffff")

    assert rig.send(Revoke("r-1", 1, "04a1b2c3")).ok
    assert rig.lock.table == {}
    assert rig.on_lock(rig.lock.present("uid", "04a1b2c3")) == "denied"
    assert [op for op, _ in rig.lock.log.accepted] == ["grant", "revoke"]
    counters = [c for _, c in rig.lock.log.accepted]
    assert counters == sorted(counters) and len(set(counters)) == 2


def test_a_window_not_yet_open_is_refused_by_the_lock(rig: Rig) -> None:
    assert rig.send(grant(start=NOW + timedelta(hours=1))).ok
    assert rig.on_lock(rig.lock.present("uid", "04a1b2c3")) == "denied"


def test_unlock_releases_the_output(rig: Rig) -> None:
    assert rig.send(Unlock("u-1", 1, seconds=7)).ok
    assert rig.lock.log.releases == [(1, 7)]


def _raw_client(rig: Rig) -> tuple[asyncio.AbstractEventLoop, BleakClient, BumbleRadio]:
    """An attacker's (or a second gateway's) central on another radio of the same link."""
    radio = BumbleRadio(rig.site.add_radio().removeprefix("bumble:"), address="F2:B0:0C:6A:7E:99")

    async def connect() -> BleakClient:
        backend: dict[str, Any] = {"backend": BumbleScanner, "radio": radio}
        device = await BleakScanner.find_device_by_address(ADDRESS, timeout=3, **backend)
        assert device is not None
        client = BleakClient(device, backend=BumbleClient, radio=radio, timeout=3)
        await client.connect()
        return client

    return rig.loop, rig.loop.run_until_complete(connect()), radio


def test_the_lock_refuses_a_forged_and_a_replayed_record(rig: Rig) -> None:
    loop, client, radio = _raw_client(rig)
    try:
        digest = profile.credential_digest(rig.key, "uid", "04a1b2c3")
        counter = rig.lock.last_counter + 1
        forged = profile.grant_record(secrets.token_bytes(32), counter, 1, digest, 0, 2**32 - 1)
        with pytest.raises(BleakGATTProtocolError) as refused:
            loop.run_until_complete(client.write_gatt_char(profile.RECORDS_UUID, forged, response=True))
        assert refused.value.args[0] == profile.ERR_BAD_TAG
        tampered = bytearray(profile.grant_record(rig.key, counter, 1, digest, 0, 100))
        tampered[-17] ^= 0xFF  # the window's end, under a tag made for the original
        with pytest.raises(BleakGATTProtocolError) as refused:
            loop.run_until_complete(client.write_gatt_char(profile.RECORDS_UUID, bytes(tampered), response=True))
        assert refused.value.args[0] == profile.ERR_BAD_TAG
        assert rig.lock.table == {}

        # a genuine grant then a genuine revoke; replaying the grant must not bring the card back
        assert rig.send(grant()).ok
        grant_bytes = profile.grant_record(rig.key, rig.lock.last_counter, 1, digest, 0, 2**32 - 1)
        assert rig.send(Revoke("r", 1, "04a1b2c3")).ok
        with pytest.raises(BleakGATTProtocolError) as refused:
            loop.run_until_complete(client.write_gatt_char(profile.RECORDS_UUID, grant_bytes, response=True))
        assert refused.value.args[0] == profile.ERR_REPLAY
        assert rig.lock.table == {}
        assert [code for code, _ in rig.lock.log.refused] == [0x80, 0x80, 0x81]
        # the driver goes on: its counter is read from the lock, not guessed
        assert rig.send(grant()).ok
    finally:
        loop.run_until_complete(client.disconnect())
        loop.run_until_complete(radio.close())


def test_a_driver_with_the_wrong_key_is_refused_and_opens_nothing(rig: Rig) -> None:
    reports: list[object] = []
    wrong = _driver(rig.site.add_radio(), secrets.token_bytes(32), reports)
    try:
        assert wait_until(lambda: any(isinstance(r, Availability) and not r.online for r in reports), timeout=10)
        offline = next(r for r in reports if isinstance(r, Availability))
        assert "does not verify" in offline.reason
        with pytest.raises(ControllerUnavailable):
            rig.loop.run_until_complete(wrong.send("gate", grant()))
        assert rig.lock.table == {} and rig.lock.log.releases == []
    finally:
        wrong.stop()


def test_a_lock_that_disconnects_mid_write_gets_the_command_after_reconnecting(rig: Rig) -> None:
    rig.lock.drop_on_write = True
    result = rig.send(grant())
    assert result.ok, result.detail
    assert result.attempts == 2
    assert (1, rig.lock.digest("uid", "04a1b2c3")) in rig.lock.table
    assert wait_until(lambda: rig.driver.snapshot("gate").online is True)


def test_the_driver_survives_a_dropped_link_and_reconnects_by_itself(rig: Rig) -> None:
    assert rig.send(grant()).ok
    rig.on_lock(rig.lock.disconnect_all())
    # the supervisor reconnects; events flow again without any command being sent
    assert wait_until(lambda: rig.on_lock(rig.lock.present("uid", "04a1b2c3")) == "granted" and rig.of(DoorEvent), 10)
    assert rig.of(DoorEvent)[-1].kind == "granted"
    assert rig.send(Revoke("r", 1, "04a1b2c3")).ok


def test_forged_and_replayed_events_are_dropped(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sent = rig.on_lock(rig.lock._notify(profile.EV_DOOR, bytes([1, 2])))  # a forced door, genuine
    assert wait_until(lambda: rig.of(DoorEvent), timeout=15)
    with caplog.at_level(logging.WARNING, logger="drivers.ble"):
        for _ in range(3):
            rig.on_lock(rig.lock.notify_raw(sent))  # replayed
        forged = bytearray(sent)
        forged[1] = profile.EV_GRANTED
        rig.on_lock(rig.lock.notify_raw(bytes(forged)))
        assert wait_until(lambda: rig.driver.snapshot("gate").events_dropped == 4, timeout=15)
    assert [(e.kind, e.door_output) for e in rig.of(DoorEvent)] == [("forced", 1)]
    # logged once per reason, not once per dropped event
    assert len([r for r in caplog.records if "event dropped" in r.getMessage()]) == 2


def test_full_sync_writes_only_to_a_lock_that_differs(rig: Rig) -> None:
    a, b = grant("04000001"), grant("04000002")
    first = rig.send(FullSync("s1", [a, b]))
    assert first.ok and first.changes == {"rewritten": ["04000001", "04000002"]}
    written = len(rig.lock.log.accepted)
    again = rig.send(FullSync("s2", [a, b]))
    assert again.ok and again.changes == {}
    assert [op for op, _ in rig.lock.log.accepted[written:]] == ["query"]  # read, not written
    assert rig.send(FullSync("s3", [b])).ok
    assert set(rig.lock.table) == {(1, rig.lock.digest("uid", "04000002"))}
    assert not rig.send(ListUsers("l")).ok


def test_no_adapter_means_offline_with_the_reason_and_nothing_crashes() -> None:
    """This host has no BlueZ (no D-Bus, no adapter): bleak's own backend fails, the lock is offline."""
    reports: list[object] = []
    with socket.socket() as s:  # a port nobody listens on: an HCI dongle that is not there
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    driver = BleDriver(
        [
            LockConfig("gate", ADDRESS, secrets.token_bytes(32), "hci0"),
            LockConfig("door", "D4:36:39:A1:00:02", secrets.token_bytes(32), f"bumble:tcp-client:127.0.0.1:{dead}"),
        ],
        retry=FAST,
    )
    driver.subscribe(reports.append)
    driver.start()
    loop = asyncio.new_event_loop()
    try:
        assert wait_until(lambda: len({r.controller_key for r in reports if isinstance(r, Availability)}) == 2, 10)
        reasons = {r.controller_key: r.reason for r in reports if isinstance(r, Availability) and not r.online}
        assert set(reasons) == {"gate", "door"}
        assert reasons["gate"] and "cannot open HCI transport" in reasons["door"]
        assert sorted(driver.stale_controllers(datetime.now(UTC))) == ["door", "gate"]
        with pytest.raises(ControllerUnavailable):
            loop.run_until_complete(driver.send("gate", grant()))
        with pytest.raises(KeyError):
            loop.run_until_complete(driver.send("nobody", grant()))
    finally:
        driver.stop()
        loop.close()


def test_the_family_keys_each_lock_and_never_logs_a_key(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from drivers.ble.family import ENTRY, key_label
    from drivers.family import DriverContext
    from drivers.registry import REGISTRY

    assert REGISTRY.check_controller("ble", {"address": ADDRESS, "adapter": "bluetooth0"})[0][0] == "settings.adapter"
    assert REGISTRY.check_controller("ble", {"address": ADDRESS, "adapter": "bumble:usb:0"}) == []
    assert "ble" in REGISTRY.simulators()
    derived: list[str] = []

    def derive(label: str) -> bytes:
        derived.append(label)
        return bytes(32)

    key_file = tmp_path / "lock.key"
    key_file.write_text("ab" * 32)
    bad_file = tmp_path / "bad.key"
    secret_text = "cd" * 31  # one byte short
    bad_file.write_text(secret_text)
    parse = ENTRY.settings.model_validate
    pairs = [
        ("a", parse({"address": ADDRESS.lower()})),
        ("b", parse({"address": "D4:36:39:A1:00:02", "key_file": str(key_file)})),
        ("c", parse({"address": "D4:36:39:A1:00:03", "key_file": str(bad_file)})),
    ]
    assert ENTRY.factory is not None
    with caplog.at_level(logging.WARNING, logger="drivers.ble"):
        driver = ENTRY.factory(pairs, DriverContext(device_key=derive))
    assert isinstance(driver, BleDriver) and driver.keys() == ["a", "b"]
    assert derived == [key_label(ADDRESS)]  # one derivation, for the lock without a key file
    assert "c not driven" in caplog.text and secret_text not in caplog.text
    assert "ab" * 32 not in repr(driver._configs["b"])  # the key is kept out of reprs
    assert ENTRY.factory(pairs[:1], DriverContext()) is None  # no key at all: not driven


def test_an_on_demand_lock_is_connected_for_a_command_and_let_go_when_idle(rig: Rig) -> None:
    rig.driver.stop()  # the fixture's driver stays connected; this one connects only to send
    assert wait_until(lambda: not rig.lock.device.connections, timeout=10)
    reports: list[object] = []
    driver = _driver(rig.adapter, rig.key, reports, stay_connected=False, idle_seconds=0.5)
    try:
        assert rig.lock.device.connections == {} and reports == []  # nothing until there is work
        assert rig.loop.run_until_complete(driver.send("gate", grant())).ok
        assert len(rig.lock.device.connections) == 1
        assert wait_until(lambda: not rig.lock.device.connections, timeout=10)  # idle: disconnected
        assert driver.snapshot("gate").online is True  # idle is not offline
        assert rig.loop.run_until_complete(driver.send("gate", Revoke("r", 1, "04a1b2c3"))).ok
        assert rig.lock.table == {}
    finally:
        driver.stop()


def test_a_radio_that_goes_away_makes_the_lock_offline_and_its_return_online(rig: Rig) -> None:
    assert rig.send(grant()).ok
    port = int(rig.adapter.rsplit(":", 1)[1])
    rig.site.close()  # the controller (here the emulated radio) is gone, and every link with it
    assert wait_until(lambda: rig.driver.snapshot("gate").online is False, timeout=15)
    reason = rig.driver.snapshot("gate").reason
    assert "cannot open HCI transport" in reason or "not found" in reason
    with pytest.raises(ControllerUnavailable):
        rig.send(grant())
    # the same lock back behind a radio on the same port: the supervisor finds it again
    site = LockSite().start()
    try:
        lock = site.add_lock(ADDRESS, rig.key)
        lock.last_counter = rig.lock.last_counter  # a real lock keeps its counter across power cycles
        site.add_radio(port)
        assert wait_until(lambda: rig.driver.snapshot("gate").online is True, timeout=15)
        assert rig.send(grant()).ok
        assert (1, lock.digest("uid", "04a1b2c3")) in lock.table
    finally:
        site.close()
