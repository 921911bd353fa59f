"""The esp-rfid driver against simulated devices, through a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from access.protocol import (
    Availability,
    Booted,
    ControllerUnavailable,
    DoorEvent,
    FullSync,
    Grant,
    Heartbeat,
    ListUsers,
    Revoke,
    Unlock,
    UserList,
)
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings
from drivers.esprfid.simulator import DeviceConfig, benchmark_ip, main
from tests.drivers.helpers import DeviceClock, Rig, make_rig, wait_until

T0 = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)


def grant(uid: str, start: datetime = T0, hours: float = 2, door: int = 1, cid: str = "g1") -> Grant:
    return Grant(cid, door, uid, f"user {uid}", start, start + timedelta(hours=hours), pin="1234")


def raw_client(url: str) -> mqtt.Client:
    settings = MqttSettings.from_url(url)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes | str, retain: bool = False) -> None:
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


@pytest.fixture
def clock() -> DeviceClock:
    return DeviceClock(T0.timestamp() + 60)


@pytest.fixture
def rig(mqtt_url: str, topic_prefix: str, clock: DeviceClock) -> Iterator[Rig]:
    device = DeviceConfig(f"{topic_prefix}/door", "198.18.0.1", "esp-door", heartbeat_interval=0.2)
    r = make_rig(mqtt_url, [device], clock=clock)
    yield r
    r.close()


def test_grant_arrives_with_window_and_device_enforces_it_offline(rig: Rig, topic_prefix: str, clock: DeviceClock):
    device = rig.device(f"{topic_prefix}/door")
    result = rig.run(rig.driver.send("esp-door", grant("a4a1b2c3", hours=2)))
    assert result.ok and result.attempts == 1, result

    stored = device.users["a4a1b2c3"]
    assert stored.validsince == int(T0.timestamp())
    assert stored.validuntil == int((T0 + timedelta(hours=2)).timestamp())
    assert stored.acctype(1) == 1 and stored.pincode == "1234" and stored.user == "user a4a1b2c3"

    assert device.present("a4a1b2c3") == "Always"
    clock.now = T0.timestamp() - 1  # before the window
    assert device.present("a4a1b2c3") == "Expired"
    clock.now = (T0 + timedelta(hours=2)).timestamp()  # validuntil is exclusive
    assert device.present("a4a1b2c3") == "Expired"

    mine = lambda: [e.kind for e in rig.collected(DoorEvent) if e.credential_uid == "a4a1b2c3"]  # noqa: E731
    assert wait_until(lambda: len(mine()) == 3), mine()
    assert mine() == ["granted", "denied", "denied"]

    device.go_offline()  # the network is gone: the device still decides by itself
    clock.now = T0.timestamp() + 3600
    assert device.present("a4a1b2c3") == "Always"
    device.come_back()
    assert wait_until(lambda: rig.driver.snapshot("esp-door").online is True)
    assert len(mine()) == 3  # the offline presentation opened the door but was never reported
    event = rig.collected(DoorEvent)[0]
    assert event.door_output == 1 and event.at.tzinfo is UTC and event.raw["access"] == "Always"


def test_regrant_is_idempotent_and_revoke_denies(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    for _ in range(2):
        assert rig.run(rig.driver.send("esp-door", grant("cafe10ab"))).ok
    assert list(device.users) == ["cafe10ab"]
    assert device.present("cafe10ab") == "Always"

    result = rig.run(rig.driver.send("esp-door", Revoke("r1", 1, "cafe10ab")))
    assert result.ok, result
    assert device.users == {}
    assert device.present("cafe10ab") == "Denied"
    # revoking what is absent still succeeds: the firmware acknowledges deletuid regardless
    assert rig.run(rig.driver.send("esp-door", Revoke("r2", 1, "cafe10ab"))).ok
    events = lambda: [(e.kind, e.raw["isKnown"]) for e in rig.collected(DoorEvent) if e.credential_uid == "cafe10ab"]  # noqa: E731
    assert wait_until(lambda: events() == [("granted", "true"), ("denied", "false")])


def test_full_sync_replaces_everything_and_list_users_reads_back(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    assert rig.run(rig.driver.send("esp-door", grant("a01d1111"))).ok
    assert rig.run(rig.driver.send("esp-door", grant("a01d2222"))).ok

    sync = FullSync("s1", [grant("b0e11111"), grant("b0e12222"), grant("b0e13333")])
    result = rig.run(rig.driver.send("esp-door", sync))
    assert result.ok and result.attempts == 6, result  # one list, two deletuid, three adduser
    assert result.changes == {"removed": ["a01d1111", "a01d2222"], "added": ["b0e11111", "b0e12222", "b0e13333"]}
    assert sorted(device.users) == ["b0e11111", "b0e12222", "b0e13333"]

    users = rig.run(rig.driver.read_users("esp-door"))
    assert users.uids == {"b0e11111", "b0e12222", "b0e13333"}
    assert any(isinstance(r, UserList) and r.uids == users.uids for r in rig.reports)

    assert rig.run(rig.driver.send("esp-door", FullSync("s2", []))).ok
    assert device.users == {}
    empty = rig.run(rig.driver.send("esp-door", ListUsers("l2")))
    assert empty.ok and empty.detail == "0 users"  # an empty list is told apart from silence


def test_unlock_is_acknowledged_by_the_remote_access_event(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    result = rig.run(rig.driver.send("esp-door", Unlock("u1", 1, seconds=3)))
    assert result.ok, result
    assert device.door_releases == 1
    assert wait_until(lambda: any(e.credential_uid is None and e.kind == "granted" for e in rig.collected(DoorEvent)))
    refused = rig.run(rig.driver.send("esp-door", Unlock("u2", 2)))
    assert not refused.ok and device.door_releases == 1


def test_paused_device_makes_commands_fail_after_retries_then_succeed(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    device.paused = True
    started = time.monotonic()
    result = rig.run(rig.driver.send("esp-door", grant("beef10ab", cid="g-paused")))
    # three counted attempts, after the quick re-sends that follow a boot (the device just booted)
    assert not result.ok and result.attempts == 6 and "no adduser reply within 0.5s after 3" in result.detail
    assert time.monotonic() - started < 3.0
    assert device.users == {}

    async def unpause_during_send():
        task = asyncio.ensure_future(rig.driver.send("esp-door", grant("beef10ab", cid="g-retry")))
        await asyncio.sleep(0.6)  # the first attempt has timed out by now
        device.paused = False
        return await task

    result = rig.run(unpause_during_send())
    assert result.ok and result.attempts >= 2, result
    assert "beef10ab" in device.users


def test_last_will_availability_boot_and_staleness(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    assert wait_until(lambda: rig.collected(Booted) and len(rig.collected(Heartbeat)) >= 2)
    assert wait_until(lambda: rig.driver.snapshot("esp-door").online is True)
    assert rig.driver.stale_controllers(datetime.now(UTC)) == []
    beat = rig.collected(Heartbeat)[-1]
    assert beat.ip == "198.18.0.1" and beat.uptime_s is not None

    device.go_offline()  # unclean: the broker publishes the will
    assert wait_until(lambda: any(isinstance(r, Availability) and not r.online for r in rig.reports))
    assert rig.driver.stale_controllers(datetime.now(UTC)) == ["esp-door"]
    result = rig.run(rig.driver.send("esp-door", grant("aa10aa10")))
    assert not result.ok

    boots = len(rig.collected(Booted))
    device.come_back()
    assert wait_until(lambda: len(rig.collected(Booted)) > boots)
    assert wait_until(lambda: rig.driver.snapshot("esp-door").online is True)
    assert rig.run(rig.driver.send("esp-door", grant("aa10aa10"))).ok
    assert rig.driver.stale_controllers(datetime.now(UTC)) == []
    # three missed beats of 0.2 s make it stale, judged at a later "now"
    assert rig.driver.stale_controllers(datetime.now(UTC) + timedelta(seconds=5)) == ["esp-door"]


def test_reboot_keeps_users_like_flash_storage(rig: Rig, topic_prefix: str, mqtt_url: str):
    device = rig.device(f"{topic_prefix}/door")
    assert rig.run(rig.driver.send("esp-door", grant("f1a5f1a5"))).ok
    boots = len(rig.collected(Booted))
    client = raw_client(mqtt_url)
    try:
        publish(client, f"{topic_prefix}/door/cmd", json.dumps({"cmd": "reboot", "doorip": "198.18.0.1"}))
        assert wait_until(lambda: len(rig.collected(Booted)) > boots)
    finally:
        client.disconnect()
        client.loop_stop()
    assert "f1a5f1a5" in device.users
    assert device.present("f1a5f1a5") == "Always"


def test_tamper_and_held_open_become_door_events(rig: Rig, topic_prefix: str):
    device = rig.device(f"{topic_prefix}/door")
    device.force_door()
    device.hold_door_open()
    device.present("unknown-card")
    assert wait_until(lambda: len(rig.collected(DoorEvent)) >= 3)
    kinds = [e.kind for e in rig.collected(DoorEvent)]
    assert kinds[:3] == ["forced", "held_open", "denied"]


def test_malformed_oversized_and_spoofed_messages_are_dropped(rig: Rig, topic_prefix: str, mqtt_url: str):
    device = rig.device(f"{topic_prefix}/door")
    assert wait_until(lambda: rig.collected(Booted))
    send = f"{topic_prefix}/door/send"
    client = raw_client(mqtt_url)
    try:
        before = rig.driver.dropped
        publish(client, send, b"\xff\xfe not json")
        publish(client, send, "[1, 2, 3]")
        publish(client, send, json.dumps({"type": "access", "isKnown": "true"}))  # no access state
        publish(client, send, b"{" + b" " * (9 * 1024) + b"}")
        publish(client, f"{topic_prefix}/door/avty", "maybe")
        spoof = {"type": "heartbeat", "time": 1, "uptime": 5, "ip": "10.6.6.6", "hostname": "esp-door"}
        publish(client, send, json.dumps(spoof))
        publish(
            client, send, json.dumps({**spoof, "type": "access", "access": "Always", "uid": "x", "hostname": "evil"})
        )
        publish(client, f"{topic_prefix}/nobody/send", json.dumps({"type": "heartbeat"}))  # not subscribed: never seen
        assert wait_until(lambda: rig.driver.dropped - before >= 7)
        assert not [r for r in rig.reports if isinstance(r, Heartbeat) and r.ip == "10.6.6.6"]
        assert not [e for e in rig.collected(DoorEvent) if e.credential_uid == "x"]

        # a forged acknowledgement from another IP does not complete a command the device never got
        device.paused = True

        async def forge_ack_while_waiting():
            task = asyncio.ensure_future(rig.driver.send("esp-door", grant("f00df00d", cid="forged")))
            await asyncio.sleep(0.1)
            forged = {"type": "adduser", "ip": "10.6.6.6", "hostname": "esp-door"}
            await asyncio.to_thread(publish, client, send, json.dumps(forged))
            return await task

        assert not rig.run(forge_ack_while_waiting()).ok
    finally:
        client.disconnect()
        client.loop_stop()
    device.paused = False
    assert rig.run(rig.driver.send("esp-door", grant("f00df00d"))).ok  # still healthy


def test_device_drops_malformed_commands_and_wrong_doorip(rig: Rig, topic_prefix: str, mqtt_url: str):
    device = rig.device(f"{topic_prefix}/door")
    cmd = f"{topic_prefix}/door/cmd"
    client = raw_client(mqtt_url)
    try:
        dropped = device.commands_dropped
        add = {"cmd": "adduser", "uid": "d00d", "user": "x", "acctype": 1, "validsince": 0, "validuntil": 2**31 - 1}
        publish(client, cmd, json.dumps({**add, "doorip": "198.18.0.99"}))  # another device's IP
        publish(client, cmd, json.dumps(add))  # no doorip at all
        publish(client, cmd, b"adduser d00d")
        publish(client, cmd, json.dumps({"doorip": "198.18.0.1", "uid": "d00d"}))  # no cmd
        publish(client, cmd, json.dumps({"cmd": "adduser", "doorip": "198.18.0.1"}))  # no uid
        publish(client, cmd, json.dumps({"cmd": "selfdestruct", "doorip": "198.18.0.1"}))
        assert wait_until(lambda: device.commands_dropped - dropped == 6)
        assert device.users == {}
        publish(client, cmd, json.dumps({**add, "doorip": "198.18.0.1", "validuntil": "2000000000"}))
        assert wait_until(lambda: "d00d" in device.users)
        assert device.users["d00d"].validuntil == 2_000_000_000  # numeric strings, as in the README
    finally:
        client.disconnect()
        client.loop_stop()


def test_multi_relay_device_keeps_one_window_per_card(mqtt_url: str, topic_prefix: str, clock: DeviceClock):
    device_cfg = DeviceConfig(f"{topic_prefix}/duo", "198.18.0.2", "esp-duo", doors=2, heartbeat_interval=1)
    rig = make_rig(mqtt_url, [device_cfg], clock=clock)
    try:
        device = rig.device(device_cfg.topic)
        assert rig.run(rig.driver.send("esp-duo", grant("c1c1c1c1", door=1))).ok
        assert rig.run(rig.driver.send("esp-duo", grant("c1c1c1c1", door=2))).ok
        assert device.decide("c1c1c1c1") == ["Always", "Always"]

        assert rig.run(rig.driver.send("esp-duo", Revoke("r", 2, "c1c1c1c1"))).ok
        assert device.decide("c1c1c1c1") == ["Always", "Disabled"]  # door 1 survived the rewrite

        other_window = grant("c1c1c1c1", start=T0 + timedelta(days=1), door=2)
        refused = rig.run(rig.driver.send("esp-duo", other_window))
        assert not refused.ok and "one window per card" in refused.detail
        assert device.decide("c1c1c1c1") == ["Always", "Disabled"]

        sync = FullSync(
            "s", [grant("c1c1c1c1"), grant("c2c2c2c2"), grant("c2c2c2c2", door=2), grant("c3c3c3c3"), other_window]
        )
        result = rig.run(rig.driver.send("esp-duo", sync))
        assert sorted(device.users) == ["c2c2c2c2", "c3c3c3c3"]  # c1 has two windows here: fail secure, left out
        assert not result.ok and "c1c1c1c1" in result.detail
        assert device.decide("c2c2c2c2") == ["Always", "Always"]
        assert wait_until(lambda: device.present("c3c3c3c3", door=2) == "Disabled")
        assert wait_until(lambda: any(e.door_output == 2 and e.kind == "denied" for e in rig.collected(DoorEvent)))
    finally:
        rig.close()


def test_devices_sharing_a_topic_are_told_apart_by_ip(mqtt_url: str, topic_prefix: str):
    topic = f"{topic_prefix}/shared"
    a = DeviceConfig(topic, "198.18.1.1", "esp-a", heartbeat_interval=0.2)
    b = DeviceConfig(topic, "198.18.1.2", "esp-b", heartbeat_interval=0.2)
    rig = make_rig(mqtt_url, [a, b], mode="hub")
    try:
        dev_a, dev_b = rig.fleet.devices
        assert rig.run(rig.driver.send("esp-a", grant("a0a0a0a0"))).ok
        assert rig.run(rig.driver.send("esp-b", grant("b0b0b0b0"))).ok
        assert list(dev_a.users) == ["a0a0a0a0"] and list(dev_b.users) == ["b0b0b0b0"]
        assert rig.run(rig.driver.read_users("esp-b")).uids == {"b0b0b0b0"}
        assert rig.run(rig.driver.read_users("esp-a")).uids == {"a0a0a0a0"}
        dev_b.present("b0b0b0b0")
        assert wait_until(lambda: any(e.controller_key == "esp-b" for e in rig.collected(DoorEvent)))
        assert {e.controller_key for e in rig.collected(DoorEvent)} == {"esp-b"}
        assert wait_until(lambda: {h.controller_key for h in rig.collected(Heartbeat)} == {"esp-a", "esp-b"})
    finally:
        rig.close()


def test_hub_mode_serves_a_thousand_devices_on_one_connection(mqtt_url: str, topic_prefix: str):
    devices = [
        DeviceConfig(f"{topic_prefix}/fleet/{i:04d}", benchmark_ip(i), f"esp-{i:04d}", heartbeat_interval=5)
        for i in range(1, 1001)
    ]
    rig = make_rig(mqtt_url, devices, mode="hub", wildcard=f"{topic_prefix}/fleet")
    try:
        assert len(rig.fleet._links) == 1
        assert wait_until(lambda: len({b.controller_key for b in rig.collected(Booted)}) == 1000, timeout=15)

        async def grant_all():
            return await asyncio.gather(
                *(rig.driver.send(d.hostname, grant(f"{0xD0000000 + i:08x}")) for i, d in enumerate(devices))
            )

        started = time.monotonic()
        results = rig.run(grant_all())
        assert all(r.ok for r in results)
        assert time.monotonic() - started < 15
        assert all(len(d.users) == 1 for d in rig.fleet.devices)

        victim = rig.fleet.devices[7]
        victim.go_offline()
        assert wait_until(lambda: rig.driver.snapshot("esp-0008").online is False)
        assert rig.driver.stale_controllers(datetime.now(UTC)) == ["esp-0008"]
        victim.come_back()
        assert wait_until(lambda: rig.driver.snapshot("esp-0008").online is True)
        rig.fleet.stop()  # the simulator going away says so, though its disconnect is clean
        assert wait_until(lambda: len(rig.driver.stale_controllers(datetime.now(UTC))) == 1000, timeout=30)
    finally:
        rig.close()


def test_unreachable_broker_raises_controller_unavailable():
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    driver = EsprfidDriver(MqttSettings.from_url(f"mqtt://127.0.0.1:{port}"), [ControllerConfig("k", "t/k", "1.2.3.4")])
    driver.start()
    loop = asyncio.new_event_loop()
    try:
        assert not loop.run_until_complete(driver.wait_connected(0.3))
        with pytest.raises(ControllerUnavailable):
            loop.run_until_complete(driver.send("k", grant("x")))
        with pytest.raises(KeyError):
            loop.run_until_complete(driver.send("nope", grant("x")))
    finally:
        driver.stop()
        loop.close()


def test_cli_main_runs_devices_and_reports_bad_urls(
    mqtt_url: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["--topic", f"{topic_prefix}/cli@198.18.9.9", "--mqtt-url", mqtt_url, "--duration", "0.2"]) == 0
    out = capsys.readouterr().out
    assert f"{topic_prefix}/cli  198.18.9.9" in out
    assert main(["--count", "3", "--prefix", f"{topic_prefix}/many", "--mqtt-url", mqtt_url, "--duration", "0.1"]) == 0
    assert "3 esp-rfid device(s) online" in capsys.readouterr().out
    assert main(["--topic", "x", "--mqtt-url", "http://nope"]) == 1
    assert main(["--mqtt-url", mqtt_url]) == 1  # nothing to simulate


def test_inbound_path_drops_unknown_controllers_and_retained_sends_without_raising(caplog: pytest.LogCaptureFixture):
    """The network-thread entry point, fed directly: nothing it receives may raise."""
    driver = EsprfidDriver(MqttSettings.from_url("mqtt://127.0.0.1"), [ControllerConfig("k", "site/k", "10.0.0.9")])
    reports: list = []
    driver.subscribe(reports.append)

    def broken(report: object) -> None:
        raise RuntimeError("a bug in someone's callback")

    driver.subscribe(broken)  # must not keep the others from their reports

    def deliver(topic: str, payload: bytes, retain: bool = False) -> None:
        msg = mqtt.MQTTMessage(topic=topic.encode())
        msg.payload = payload
        msg.retain = retain
        driver._on_message(None, None, msg)  # type: ignore[arg-type]

    beat = json.dumps({"type": "heartbeat", "time": 1, "uptime": 3, "ip": "10.0.0.9", "hostname": "h"}).encode()
    deliver("site/other/send", beat)  # a controller we do not know
    deliver("site/k/status", beat)  # a topic esp-rfid does not use
    deliver("site/k/send", beat, retain=True)  # a stale retained copy
    assert driver.dropped == 3 and reports == []
    deliver("site/k/send", beat)
    assert len(reports) == 1 and isinstance(reports[0], Heartbeat) and reports[0].uptime_s == 3
    with caplog.at_level("WARNING", logger="drivers.esprfid"):
        for _ in range(5):
            deliver("site/k/send", b"garbage")
    assert driver.dropped == 8
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1  # logged once, counted always


@pytest.fixture
def trio(mqtt_url: str, topic_prefix: str, clock: DeviceClock) -> Iterator[Rig]:
    devices = [DeviceConfig(f"{topic_prefix}/d{i}", f"198.18.1.{i}", f"esp-d{i}", doors=2) for i in range(3)]
    r = make_rig(mqtt_url, devices, clock=clock)
    for i in range(3):  # first commands after the boot take `send`'s quick re-sends: get past them
        assert r.run(r.driver.send(f"esp-d{i}", ListUsers(f"warm{i}"))).ok
    yield r
    r.close()


def test_send_batch_queues_per_device_and_returns_results_in_order(trio: Rig, topic_prefix: str):
    pairs: list = []
    for i in range(3):
        pairs += [(f"esp-d{i}", grant(f"c{i}d{k}10ab", cid=f"g{i}{k}")) for k in range(4)]
    pairs.append(("esp-d0", grant("c0d010ab", door=2, cid="second-relay")))  # same device, other relay
    pairs.append(("esp-d1", Revoke("r1", 1, "c1d010ab")))  # queued after its grant on the same lane
    pairs.append(("esp-nowhere", grant("dead10ab", cid="lost")))
    pairs.append(("esp-d2", ListUsers("list-in-batch")))  # not a lane command: through `send`
    results = trio.run(trio.driver.send_batch(pairs))
    assert [r.command_id for r in results] == [c.command_id for _, c in pairs]
    assert all(r.ok for r in results[:-2]), [r for r in results if not r.ok]
    assert not results[-2].ok and "esp-nowhere" in results[-2].detail
    assert results[-1].ok and results[-1].detail.endswith("users")
    d0, d1, d2 = (trio.device(f"{topic_prefix}/d{i}") for i in range(3))
    assert sorted(d0.users) == ["c0d010ab", "c0d110ab", "c0d210ab", "c0d310ab"]
    assert d0.users["c0d010ab"].acctype(1) == 1 and d0.users["c0d010ab"].acctype(2) == 1  # both relays kept
    assert "c1d010ab" not in d1.users and len(d1.users) == 3
    assert len(d2.users) == 4
    # the driver's shadow follows the lanes' acknowledgements
    assert trio.driver.held_users("esp-d1").uids == set(d1.users)


def test_send_batch_retries_a_silent_device_through_send_and_send_waits_for_the_lane(trio: Rig, topic_prefix: str):
    d0 = trio.device(f"{topic_prefix}/d0")
    d0.paused = True

    async def scenario():
        batch = asyncio.ensure_future(
            trio.driver.send_batch([("esp-d0", grant("a1a1a1a1", cid="slow")), ("esp-d1", grant("b1b1b1b1"))])
        )
        await asyncio.sleep(0.7)  # the lane's attempt has timed out; `send` retries it
        d0.paused = False
        # a read-back meanwhile waits for the device's command in flight and sees its result
        listed = await trio.driver.send("esp-d0", ListUsers("l"))
        return await batch, listed

    (slow, fast), listed = trio.run(scenario())
    assert fast.ok and fast.attempts == 1
    assert slow.ok and slow.attempts >= 2, slow
    assert "a1a1a1a1" in d0.users and listed.ok

    d0.paused = True
    (failed,) = trio.run(trio.driver.send_batch([("esp-d0", grant("a2a2a2a2", cid="never"))]))
    assert not failed.ok and failed.attempts == 3 and "after 3 attempts" in failed.detail, failed
