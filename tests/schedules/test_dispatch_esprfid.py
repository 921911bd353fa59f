"""End to end over a real broker: a booking's grant reaches a simulated esp-rfid controller with
its window, the controller enforces it by its own clock, and a cancellation removes the card."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from drivers.esprfid.simulator import DeviceConfig
from schedules.dispatch import dispatch_once
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import DeviceClock, make_rig
from tests.schedules.test_dispatch import booked  # noqa: F401 - fixture reused

pytestmark = pytest.mark.usefixtures("example_site")


def test_grant_reaches_the_controller_and_cancel_removes_it(client, engine, booked, mqtt_url, topic_prefix):  # noqa: F811
    res, headers = booked
    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    clock = DeviceClock(a_start.timestamp() + 60)  # the controller's own clock, inside the window
    device_cfg = DeviceConfig(f"{topic_prefix}/courts", "198.18.0.7", "courts-ctl", heartbeat_interval=0.5)
    rig = make_rig(mqtt_url, [device_cfg], clock=clock)
    try:
        device = rig.device(device_cfg.topic)

        def send(key, command):
            return rig.run(rig.driver.send(key, command))

        assert dispatch_once(engine, send, now=a_start - timedelta(hours=2)) == 1
        stored = device.users["B0B0"]
        assert (stored.validsince, stored.validuntil) == (int(a_start.timestamp()), int(a_end.timestamp()))
        assert device.present("B0B0") == "Always"  # decided by the controller itself
        clock.now = a_end.timestamp() + 1
        assert device.present("B0B0") == "Expired"
        clock.now = a_start.timestamp() + 60

        client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=headers)
        assert dispatch_once(engine, send) == 1
        assert "B0B0" not in device.users
        assert device.present("B0B0") != "Always"
    finally:
        rig.close()
