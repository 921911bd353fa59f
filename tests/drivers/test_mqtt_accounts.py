"""Per-controller MQTT accounts on a real Mosquitto: the files the gateway writes are accepted by
the broker, each controller may speak only on its own topics, strangers are refused."""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlmodel import select

from access.models import Controller
from access.protocol import Booted
from bench.harness import free_port
from bookgate.mqtt_accounts import AccountError, broker_files, issue
from core.audit import SYSTEM, AuditEntry
from core.db import read_session, write_session
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
from drivers.mosquitto import check_password, password_hash
from tests.drivers.helpers import MOSQUITTO, wait_until

pytestmark = pytest.mark.usefixtures("example_site")


def test_password_hashes_are_mosquittos_format():
    stored = password_hash("s3cret", iterations=101, salt=b"\x01" * 12)
    assert stored.startswith("$7$101$AQEBAQEBAQEBAQEB$")
    assert check_password("s3cret", stored) and not check_password("other", stored)
    assert not check_password("s3cret", "garbage")


@pytest.fixture
def secured(engine, tmp_path) -> Iterator[dict]:
    """Accounts for two controllers, the broker's files from the database, and a Mosquitto using them."""
    port = free_port()
    creds = {}
    with write_session(engine) as s:
        for key, name in (("courts-ctl", "courts"), ("rooms-ctl", "rooms")):
            ctl = s.exec(select(Controller).where(Controller.key == key)).one()
            ctl.settings = {**ctl.settings, "topic": f"secured/{name}"}
            s.add(ctl)
            s.flush()
            creds[key] = (*issue(s, key, SYSTEM), ctl.settings["doorip"])
        with pytest.raises(AccountError):
            issue(s, "garage-ctl", SYSTEM)  # OSDP: no MQTT account to give
    gateway_url = f"mqtt://bookgate-gw:gw-{time.time_ns()}@127.0.0.1:{port}"
    with read_session(engine) as s:
        with pytest.raises(AccountError):
            broker_files(s, f"mqtt://127.0.0.1:{port}")  # the gateway needs an account too
        passwd, acl = broker_files(s, gateway_url)
        stored = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        assert stored.mqtt_secret.startswith("$7$") and creds["courts-ctl"][1] not in passwd
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "controller.mqtt_account")).all()
    (tmp_path / "passwd").write_text(passwd)
    (tmp_path / "acl").write_text(acl)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        # as root, mosquitto would switch to its own user, who cannot read our private temp dir
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
    )
    if not Path(MOSQUITTO).exists():
        pytest.skip("no mosquitto binary")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: _listening(port), 10), "mosquitto did not start"
    try:
        yield {"port": port, "gateway": gateway_url, "creds": creds}
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _connect_rc(port: int, username: str | None, password: str | None) -> int:
    got: list[int] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if username:
        client.username_pw_set(username, password)

    def on_connect(c, u, f, rc, p):
        got.append(rc.value)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else -1


def test_each_controller_speaks_only_on_its_own_topics(secured):
    port, creds = secured["port"], secured["creds"]
    courts_user, courts_pw, courts_ip = creds["courts-ctl"]
    rooms_user, rooms_pw, rooms_ip = creds["rooms-ctl"]
    assert _connect_rc(port, None, None) != 0  # anonymous: refused
    assert _connect_rc(port, courts_user, "wrong") != 0
    assert _connect_rc(port, courts_user, courts_pw) == 0

    driver = EsprfidDriver(
        MqttSettings.from_url(secured["gateway"]),
        [
            ControllerConfig("courts-ctl", "secured/courts", courts_ip),
            ControllerConfig("rooms-ctl", "secured/rooms", rooms_ip),
        ],
    )
    booted: list[str] = []
    driver.subscribe(lambda r: booted.append(r.controller_key) if isinstance(r, Booted) else None)
    driver.start()
    fleets = []
    try:
        assert wait_until(lambda: driver.connected, 10)
        # A device holding the courts account pretends to be the rooms reader: the broker drops it.
        url = f"mqtt://{courts_user}:{courts_pw}@127.0.0.1:{port}"
        impostor = SimulatorFleet(MqttSettings.from_url(url), [DeviceConfig("secured/rooms", rooms_ip, "rooms")])
        fleets.append(impostor)
        impostor.start()
        time.sleep(1.0)
        assert "rooms-ctl" not in booted
        # The real ones, each with its own account, are heard.
        for user, pw, topic, ip, name in (
            (courts_user, courts_pw, "secured/courts", courts_ip, "courts"),
            (rooms_user, rooms_pw, "secured/rooms", rooms_ip, "rooms"),
        ):
            fleet = SimulatorFleet(
                MqttSettings.from_url(f"mqtt://{user}:{pw}@127.0.0.1:{port}"), [DeviceConfig(topic, ip, name)]
            )
            fleets.append(fleet)
            fleet.start()
            assert fleet.wait_ready(10)
        assert wait_until(lambda: {"courts-ctl", "rooms-ctl"} <= set(booted), 10), booted
    finally:
        for f in fleets:
            f.stop()
        driver.stop()
