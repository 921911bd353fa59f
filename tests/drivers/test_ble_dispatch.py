"""End to end: a booking's grant reaches an emulated BLE lock through the dispatcher and the driver
host that the composition root builds from the registry, keyed as the gateway keys its locks."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from access.models import Controller
from bookgate.controllers import device_key_deriver, start_drivers
from core.db import read_session, write_session
from drivers.ble.emulator import LockSite
from drivers.ble.family import ENTRY as BLE
from drivers.ble.family import key_label
from drivers.registry import DriverRegistry
from schedules.dispatch import dispatch_once
from tests.drivers.helpers import wait_until
from tests.schedules.test_dispatch import booked  # noqa: F401 - fixture reused

pytestmark = pytest.mark.usefixtures("example_site")

ADDRESS = "D4:36:39:A1:00:07"


def test_a_bookings_grant_reaches_the_ble_gate_and_a_cancel_revokes_it(client, engine, settings, booked):  # noqa: F811
    res, headers = booked
    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    clock_now = [a_start.timestamp() + 60]  # the lock's own clock, inside the window
    site = LockSite().start()
    # the lock is keyed at installation with what the gateway derives for its address
    lock = site.add_lock(ADDRESS, device_key_deriver(settings)(key_label(ADDRESS)), clock=lambda: clock_now[0])
    adapter = site.add_radio()
    with write_session(engine) as s:  # the courts' gate becomes a BLE lock
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        ctl.driver, ctl.settings = "ble", {"address": ADDRESS, "adapter": adapter}
        s.add(ctl)
    host = start_drivers(engine, settings, registry=DriverRegistry([BLE]))
    assert host is not None and "courts-ctl" in host.keys()
    try:

        def state(key: str) -> str:
            with read_session(engine) as s:
                return s.exec(select(Controller.state).where(Controller.key == key)).one()

        def synced() -> bool:
            with read_session(engine) as s:
                return s.exec(select(Controller.last_sync).where(Controller.key == "courts-ctl")).one() is not None

        # the lock came online: the host marks it and re-syncs it (nothing to hold yet); the site's
        # other BLE locks sit behind hci0, and this host has no Bluetooth stack: offline, no crash
        assert wait_until(lambda: state("courts-ctl") == "online" and synced(), timeout=15)
        others = [k for k in host.keys() if k != "courts-ctl"]
        assert wait_until(lambda: all(state(k) == "offline" for k in others), timeout=15)
        assert dispatch_once(engine, host.send, now=a_start - timedelta(hours=2)) == 1
        entry = lock.table[(1, lock.digest("uid", "b0b0b0b0"))]
        assert (entry.valid_from, entry.valid_until) == (int(a_start.timestamp()), int(a_end.timestamp()))
        assert site.call(lock.present("uid", "b0b0b0b0")) == "granted"
        clock_now[0] = a_end.timestamp() + 1
        assert site.call(lock.present("uid", "b0b0b0b0")) == "denied"  # the lock's own clock decides
        clock_now[0] = a_start.timestamp() + 60

        r = client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=headers)
        assert r.status_code == 200, r.text
        assert dispatch_once(engine, host.send) == 1
        assert lock.table == {}
        assert site.call(lock.present("uid", "b0b0b0b0")) == "denied"
    finally:
        host.stop()
        site.close()
