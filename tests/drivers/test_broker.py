"""The embedded amqtt broker: paho connects, subscribes, receives, keeps retained messages and wills."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from access.protocol import Availability, Grant
from drivers.broker import EmbeddedBroker, start_embedded_broker
from drivers.esprfid.simulator import DeviceConfig
from tests.drivers.helpers import make_rig, wait_until


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    handle = start_embedded_broker()
    yield handle
    handle.stop()


def _client(broker: EmbeddedBroker, name: str, will: str | None = None) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    received: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name)
    if will:
        client.will_set(will, "offline", qos=1, retain=True)
    client.on_message = lambda c, u, msg: received.append(msg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribed = subscribed  # type: ignore[attr-defined]
    return client, received


def test_listens_on_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        start_embedded_broker(host="0.0.0.0")  # noqa: S104


def test_publish_subscribe_retained_and_last_will(broker: EmbeddedBroker):
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    watcher, seen = _client(broker, "watcher")
    watcher.subscribe("demo/#", qos=1)
    assert watcher.subscribed.wait(5)  # type: ignore[attr-defined]

    device, _ = _client(broker, "device", will="demo/avty")
    assert wait_until(device.is_connected)
    device.publish("demo/avty", "online", qos=1, retain=True).wait_for_publish(5)
    device.publish("demo/send", "hello", qos=1).wait_for_publish(5)
    assert wait_until(lambda: [m.payload for m in seen] == [b"online", b"hello"])

    sock = device.socket()  # drop the TCP connection without DISCONNECT: the broker sends the will
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    device.loop_stop()
    sock.close()
    assert wait_until(lambda: [m.payload for m in seen][-1:] == [b"offline"])

    late, got = _client(broker, "late")
    late.subscribe("demo/avty", qos=1)
    assert wait_until(lambda: any(m.retain and m.payload == b"offline" for m in got))
    for client in (watcher, late):
        client.disconnect()
        client.loop_stop()


def test_driver_and_simulator_over_the_embedded_broker(broker: EmbeddedBroker):
    device = DeviceConfig("embedded/door", "198.18.3.1", "esp-emb", heartbeat_interval=1)
    rig = make_rig(broker.url, [device])
    try:
        start = datetime.now(UTC) - timedelta(minutes=1)
        assert rig.run(rig.driver.send("esp-emb", Grant("g", 1, "42", "Ann", start, start + timedelta(hours=1)))).ok
        assert rig.device("embedded/door").present("42") == "Always"
        rig.device("embedded/door").go_offline()
        assert wait_until(lambda: any(isinstance(r, Availability) and not r.online for r in rig.reports))
    finally:
        rig.close()


def test_broker_outage_is_logged_once_down_and_once_back(caplog: pytest.LogCaptureFixture):
    import asyncio

    from access.protocol import ControllerUnavailable
    from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings

    first = start_embedded_broker()
    driver = EsprfidDriver(MqttSettings.from_url(first.url), [ControllerConfig("k", "outage/k", "10.0.0.1")])
    loop = asyncio.new_event_loop()
    second = None
    try:
        driver.start()
        assert loop.run_until_complete(driver.wait_connected(5))
        with caplog.at_level("WARNING", logger="drivers.esprfid"):
            first.stop()
            assert wait_until(lambda: not driver.connected)
            now = datetime.now(UTC)
            with pytest.raises(ControllerUnavailable):
                loop.run_until_complete(driver.send("k", Grant("g", 1, "1", "A", now, now + timedelta(hours=1))))
            second = start_embedded_broker(port=first.port)
            assert loop.run_until_complete(driver.wait_connected(10))
        messages = [r.getMessage() for r in caplog.records if r.name == "drivers.esprfid"]
        assert len([m for m in messages if "lost MQTT broker" in m or "cannot reach" in m]) == 1, messages
        assert len([m for m in messages if "reachable again" in m]) == 1, messages
    finally:
        driver.stop()
        loop.close()
        if second is not None:
            second.stop()
