"""The running server pushes a booking's grant to its esp-rfid controller by itself, takes it back
on cancellation, and re-syncs a controller that reboots: the scheduler's dispatcher, the driver,
a real broker (Mosquitto) and a simulated device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import yaml
from fastapi.testclient import TestClient

from bookgate.app import create_app
from bookgate.provision import apply_site_file
from config import Settings
from config.site import example_path, parse_site_document
from core.audit import SYSTEM
from core.db import utcnow
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatedController, SimulatorFleet
from tests.conftest import login
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused

ALL_DAY = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@dataclass
class Site:
    client: TestClient
    device: SimulatedController
    admin: dict[str, str]
    alice: dict[str, str]
    alice_id: int

    def book_court(self, badge: str) -> dict:
        """Alice, holding `badge`, books court-1 two hours from now (so its grant is due at once)."""
        me = self.client.get("/api/v1/users/me", headers=self.alice).json()
        self.client.post(
            f"/api/v1/users/{me['id']}/credentials", json={"kind": "badge", "value": badge}, headers=self.admin
        )
        start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
        r = self.client.post(
            "/api/v1/reservations",
            headers=self.alice,
            json={"resource": "court-1", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        )
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def site(engine, make_user, tmp_path, mqtt_url, topic_prefix) -> Iterator[Site]:  # noqa: F811
    doc = yaml.safe_load(example_path().read_text())
    courts = next(c for c in doc["sites"][0]["controllers"] if c["key"] == "courts-ctl")
    courts["settings"]["topic"] = f"{topic_prefix}/courts"
    courts["settings"]["heartbeat_seconds"] = 1  # the device below beats every 0.5 s
    apply_site_file(engine, parse_site_document(doc), SYSTEM)
    fleet = SimulatorFleet(
        MqttSettings.from_url(mqtt_url),
        # boot_to_subscribe: the gap a real device leaves between saying boot and listening for commands
        [
            DeviceConfig(
                f"{topic_prefix}/courts",
                courts["settings"]["doorip"],
                "courts",
                heartbeat_interval=0.5,
                boot_to_subscribe=0.3,
            )
        ],
    )
    fleet.start()
    assert fleet.wait_ready(10)
    # The safety-net poll is slow on purpose: pushes must come from the exact wake-ups.
    settings = Settings(
        var_dir=tmp_path / "var", scheduler=True, mqtt_url=mqtt_url, dispatch_every_seconds=60, _env_file=None
    )
    admin_user, apw = make_user({"role": "admin"})
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"})
    try:
        with TestClient(create_app(settings, engine=engine, migrate_on_start=False)) as client:
            admin = login(client, admin_user.email, apw)
            r = client.patch("/api/v1/resources/court-1/rules", json={"opening_hours": ALL_DAY}, headers=admin)
            assert r.status_code == 200
            yield Site(client, fleet[f"{topic_prefix}/courts"], admin, login(client, alice.email, pw), alice.id)
    finally:
        fleet.stop()


def test_server_pushes_grants_and_revokes(site):
    res = site.book_court("a1a1a1a1")
    assert _wait(lambda: "a1a1a1a1" in site.device.users), "the grant never reached the controller"
    a_start = datetime.fromisoformat(res["access_start"])
    assert site.device.users["a1a1a1a1"].validsince == int(a_start.timestamp())
    site.client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=site.alice)
    assert _wait(lambda: "a1a1a1a1" not in site.device.users), "the revoke never reached the controller"


def test_rebooted_controller_is_resynced_and_state_is_live(site):
    site.book_court("a2a2a2a2")
    assert _wait(lambda: "a2a2a2a2" in site.device.users)
    # The device loses its memory (a replacement unit) and boots: the gateway re-syncs it in full.
    site.device.files.clear()
    started = time.monotonic()
    site.device.reboot()
    assert _wait(lambda: "a2a2a2a2" in site.device.users), "no re-sync after the reboot"
    # The device says boot before it subscribes, so the gateway's first re-sync command is lost;
    # it is asked again within a fraction of a second, not after the 5 s acknowledgement timeout.
    took = time.monotonic() - started
    assert took < 2.5, f"the re-sync took {took:.1f}s"

    def courts() -> dict:
        rows = site.client.get("/api/v1/controllers", headers=site.admin).json()
        return next(c for c in rows if c["key"] == "courts-ctl")

    assert _wait(lambda: courts()["state"] == "online" and courts()["last_sync"] is not None)
    assert site.client.get("/api/v1/controllers", headers=site.alice).status_code == 403


def test_a_revoked_badge_leaves_the_controller_at_once(site):
    site.book_court("a3a3a3a3")
    assert _wait(lambda: "a3a3a3a3" in site.device.users)
    creds = site.client.get(f"/api/v1/users/{site.alice_id}/credentials", headers=site.admin).json()
    cred = next(c for c in creds if c["value"] == "a3a3a3a3")
    r = site.client.delete(f"/api/v1/users/{site.alice_id}/credentials/{cred['id']}", headers=site.admin)
    assert r.status_code == 200
    assert _wait(lambda: "a3a3a3a3" not in site.device.users, 5), "a revoked badge stayed on the controller"


def test_reconcile_repairs_what_the_controller_holds(site, engine):
    site.book_court("a4a4a4a4")
    assert _wait(lambda: "a4a4a4a4" in site.device.users)
    host = site.client.app.state.driver_host
    # A controller that matches is only read: no write, no audit entry.
    handled = site.device.commands_handled
    assert host.reconcile("courts-ctl") == {}
    assert site.device.commands_handled - handled == 2  # getuserlist and the fence that closes the list
    from sqlmodel import func, select

    from core.audit import AuditEntry
    from core.db import read_session

    with read_session(engine) as s:
        reconciled = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "controller.reconciled")
        assert s.exec(reconciled).one() == 0
    # Someone edits the device by hand: a stranger's card appears, the booked one disappears.
    site.device.files.pop("a4a4a4a4")
    site.device.add_user_from_web("feed10ab", "intruder", 0, 2**31 - 1)
    diff = host.reconcile("courts-ctl")
    assert diff == {"added": ["a4a4a4a4"], "removed": ["feed10ab"]}
    assert "a4a4a4a4" in site.device.users and "feed10ab" not in site.device.users
    with read_session(engine) as s:
        assert s.exec(reconciled).one() == 1


def test_a_grant_due_later_is_sent_on_time(site, engine):
    """An exact wake-up for a transition due in the future, with the safety-net poll a minute away."""
    from sqlmodel import select

    from access.models import Credential
    from access.transitions import PRELOAD
    from access.windows import set_windows
    from bms.models import Resource
    from core.db import write_session

    me = site.alice_id
    site.client.post(f"/api/v1/users/{me}/credentials", json={"kind": "badge", "value": "a5a5a5a5"}, headers=site.admin)
    due = utcnow() + timedelta(seconds=2)
    with write_session(engine) as s:
        court = s.exec(select(Resource).where(Resource.key == "court-1")).one()
        assert s.exec(select(Credential).where(Credential.value == "a5a5a5a5")).one()
        set_windows(
            s, "visit", 77, court.id, [me], due + PRELOAD, due + PRELOAD + timedelta(hours=1), "badge", active=True
        )
    assert "a5a5a5a5" not in site.device.users
    assert _wait(lambda: "a5a5a5a5" in site.device.users, 10)
    late = utcnow() - due
    assert timedelta(0) <= late < timedelta(seconds=1.5), late


def test_a_controller_that_stops_beating_goes_offline(site, engine):
    """The will covers a dead connection; missed heartbeats cover a device that hangs on it."""
    from sqlmodel import select

    from access.models import Controller
    from core.db import read_session

    host = site.client.app.state.driver_host
    assert _wait(lambda: host.supervise() == 0 and _state(engine, "courts-ctl") == "online")
    site.device._next_beat = float("inf")  # the device's main loop hangs: no more heartbeats
    assert _wait(lambda: host.supervise() == 1, 10)
    with read_session(engine) as s:
        assert s.exec(select(Controller).where(Controller.key == "courts-ctl")).one().state == "offline"


def _state(engine, key: str) -> str:
    from sqlmodel import select

    from access.models import Controller
    from core.db import read_session

    with read_session(engine) as s:
        return s.exec(select(Controller).where(Controller.key == key)).one().state
