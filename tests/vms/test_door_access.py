"""End to end over the running Mosquitto: a visitor invited, the QR image decoded by zxing-cpp,
checked in at the desk; the day badge the desk handed out reaches a simulated esp-rfid
controller and opens the courts gate there, the QR code is let through by the gateway's online
decision; check-out takes both back at once."""

from __future__ import annotations

import pytest

from access.decisions import DecisionIndex
from core.db import read_session, utcnow
from drivers.esprfid.simulator import DeviceConfig
from schedules.dispatch import dispatch_once
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import DeviceClock, make_rig
from tests.vms.conftest import Desk

pytestmark = pytest.mark.usefixtures("example_site")


def test_check_in_grants_the_gate_and_check_out_revokes_it(desk: Desk, mqtt_url, topic_prefix):  # noqa: F811
    device_cfg = DeviceConfig(f"{topic_prefix}/courts", "198.18.0.7", "courts-ctl", heartbeat_interval=5)
    clock = DeviceClock()  # the controller's own wall clock
    rig = make_rig(mqtt_url, [device_cfg], clock=clock)
    try:
        device = rig.device(device_cfg.topic)

        def send(key, command):
            return rig.run(rig.driver.send(key, command))

        visit = desk.invite()
        token = desk.token(visit)
        r = desk.client.post(f"/api/v1/visits/{visit['id']}/badge", json={"value": "b1c2d3e4"}, headers=desk.reception)
        assert r.status_code == 201, r.text
        assert dispatch_once(desk.engine, send) == 0  # nothing for the visitor before check-in
        assert "b1c2d3e4" not in device.users

        assert desk.scan(token).json()["status"] == "checked_in"
        assert dispatch_once(desk.engine, send) >= 1
        assert token not in device.users  # the QR secret never leaves the gateway
        clock.now = utcnow().timestamp() + 1
        assert device.present("b1c2d3e4") == "Always"  # the controller itself lets the badge in
        index = DecisionIndex()
        with read_session(desk.engine) as s:
            index.load(s)
        gate = index.door_by_key("court-gate")
        lobby = index.door_by_key("lobby-door")
        assert index.decide(gate, "qr", token, utcnow()).allowed  # the QR code, decided online
        assert not index.decide(lobby, "qr", token, utcnow()).allowed  # not a door of the visit

        r = desk.client.post(f"/api/v1/visits/{visit['id']}/check-out", headers=desk.reception)
        assert r.json()["status"] == "checked_out"
        assert dispatch_once(desk.engine, send) >= 1
        assert "b1c2d3e4" not in device.users
        assert device.present("b1c2d3e4") != "Always"
        with read_session(desk.engine) as s:
            index.refresh(s)
        assert not index.decide(gate, "qr", token, utcnow()).allowed
    finally:
        rig.close()
