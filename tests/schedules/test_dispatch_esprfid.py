"""End to end over a real broker: a booking's grant reaches a simulated esp-rfid controller with
its window, the controller enforces it by its own clock, and a cancellation removes the card."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from drivers.esprfid.simulator import DeviceConfig
from schedules.dispatch import dispatch_once
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import DeviceClock, make_rig, wait_until
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
        stored = device.users["b0b0b0b0"]
        assert (stored.validsince, stored.validuntil) == (int(a_start.timestamp()), int(a_end.timestamp()))
        assert device.present("b0b0b0b0") == "Always"  # decided by the controller itself
        clock.now = a_end.timestamp() + 1
        assert device.present("b0b0b0b0") == "Expired"
        clock.now = a_start.timestamp() + 60

        client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=headers)
        assert dispatch_once(engine, send) == 1
        assert "b0b0b0b0" not in device.users
        assert device.present("b0b0b0b0") != "Always"
    finally:
        rig.close()


# reader type, how the resident's badge is registered, the physical card as the reader sees it
READERS = [
    ("mfrc522", "uid", "040a1b0c", bytes.fromhex("040a1b0c")),
    ("pn532", "uid", "04a10b2c3d4e08", bytes.fromhex("04a10b2c3d4e08")),
    ("rdm6300", "em4100", "000a1b2c3d", bytes.fromhex("000a1b2c3d")),
    ("wiegand", "wiegand", "1234567", 1234567),
    ("rdm6300+pn532", "uid", "01020304", bytes.fromhex("01020304")),
]


@pytest.mark.parametrize(("reader", "fmt", "value", "card"), READERS, ids=[r[0] for r in READERS])
def test_a_residents_badge_opens_as_each_reader_reads_it_during_the_booking_only(
    client,
    engine,
    booked,  # noqa: F811
    make_user,
    mqtt_url,  # noqa: F811
    topic_prefix,  # noqa: F811
    reader,
    fmt,
    value,
    card,
):
    """The controller's reader type comes from the site file; the gateway stores the badge under the
    name that reader produces (bytes below 0x10 included), and the door events it reports are
    matched back to the resident and the booking."""
    from sqlmodel import select

    from access import events
    from access.models import Controller
    from access.protocol import DoorEvent
    from core.db import write_session
    from tests.conftest import login

    res, _headers = booked
    bob = res["beneficiaries"][0]
    admin_user, apw = make_user({"role": "admin"})
    admin = login(client, admin_user.email, apw)
    r = client.post(
        f"/api/v1/users/{bob}/credentials", json={"kind": "badge", "format": fmt, "value": value}, headers=admin
    )
    assert r.status_code == 201, r.text
    with write_session(engine) as s:
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        ctl.settings = {**ctl.settings, "reader": reader}
        s.add(ctl)
    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    clock = DeviceClock(a_start.timestamp() + 60)
    device_cfg = DeviceConfig(f"{topic_prefix}/courts", "198.18.0.7", "courts-ctl", heartbeat_interval=5, reader=reader)
    rig = make_rig(mqtt_url, [device_cfg], clock=clock)
    try:
        device = rig.device(device_cfg.topic)

        def send(key, command):
            return rig.run(rig.driver.send(key, command))

        dispatch_once(engine, send, now=a_start - timedelta(hours=2))
        assert device.present_card(card) == "Always"
        clock.now = a_start.timestamp() - 60
        assert device.present_card(card) == "Expired"
        clock.now = a_end.timestamp() + 1
        assert device.present_card(card) == "Expired"
        assert wait_until(lambda: len([e for e in rig.collected(DoorEvent) if e.credential_uid]) >= 3)
        granted = next(e for e in rig.collected(DoorEvent) if e.kind == "granted")
        with write_session(engine) as s:
            row = events.record(s, replace(granted, at=a_start + timedelta(minutes=1)))
            assert row is not None
            assert (row.user_id, row.credential_id, row.source) == (bob, r.json()["id"], f"reservation:{res['id']}")
    finally:
        rig.close()
