"""The running server pushes a booking's grant to its esp-rfid controller by itself (and takes it
back on cancellation): the scheduler's dispatcher, the driver, a real broker, a simulated device."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import yaml
from fastapi.testclient import TestClient

from bookgate.app import create_app
from bookgate.audit import SYSTEM
from bookgate.db import utcnow
from bookgate.provision import apply_site_file
from config import Settings
from config.site import example_path, parse_site_document
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
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


def test_server_pushes_grants_and_revokes(engine, make_user, tmp_path, mqtt_url, topic_prefix):  # noqa: F811
    doc = yaml.safe_load(example_path().read_text())
    courts = next(c for c in doc["sites"][0]["controllers"] if c["key"] == "courts-ctl")
    courts["settings"]["topic"] = f"{topic_prefix}/courts"
    apply_site_file(engine, parse_site_document(doc), SYSTEM)
    fleet = SimulatorFleet(
        MqttSettings.from_url(mqtt_url),
        [DeviceConfig(f"{topic_prefix}/courts", courts["settings"]["doorip"], "courts")],
    )
    fleet.start()
    assert fleet.wait_ready(10)
    device = fleet[f"{topic_prefix}/courts"]
    settings = Settings(
        var_dir=tmp_path / "var", scheduler=True, mqtt_url=mqtt_url, dispatch_every_seconds=0.3, _env_file=None
    )
    admin_user, apw = make_user({"role": "admin"})
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"})
    try:
        with TestClient(create_app(settings, engine=engine, migrate_on_start=False)) as client:
            admin = login(client, admin_user.email, apw)
            assert (
                client.patch(
                    "/api/v1/resources/court-1/rules", json={"opening_hours": ALL_DAY}, headers=admin
                ).status_code
                == 200
            )
            client.post(f"/api/v1/users/{alice.id}/credentials", json={"kind": "badge", "value": "a1a1"}, headers=admin)
            start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            r = client.post(
                "/api/v1/reservations",
                headers=login(client, alice.email, pw),
                json={
                    "resource": "court-1",
                    "start": start.isoformat(),
                    "end": (start + timedelta(hours=1)).isoformat(),
                },
            )
            assert r.status_code == 201, r.text
            assert _wait(lambda: "A1A1" in device.users), "the grant never reached the controller"
            a_start = datetime.fromisoformat(r.json()["access_start"])
            assert device.users["A1A1"].validsince == int(a_start.timestamp())
            client.post(
                f"/api/v1/reservations/{r.json()['id']}/cancel", json={}, headers=login(client, alice.email, pw)
            )
            assert _wait(lambda: "A1A1" not in device.users), "the revoke never reached the controller"
    finally:
        fleet.stop()


def test_rebooted_controller_is_resynced_and_state_is_live(engine, make_user, tmp_path, mqtt_url, topic_prefix):  # noqa: F811
    doc = yaml.safe_load(example_path().read_text())
    courts = next(c for c in doc["sites"][0]["controllers"] if c["key"] == "courts-ctl")
    courts["settings"]["topic"] = f"{topic_prefix}/courts"
    apply_site_file(engine, parse_site_document(doc), SYSTEM)
    fleet = SimulatorFleet(
        MqttSettings.from_url(mqtt_url),
        [DeviceConfig(f"{topic_prefix}/courts", courts["settings"]["doorip"], "courts", heartbeat_interval=0.5)],
    )
    fleet.start()
    assert fleet.wait_ready(10)
    device = fleet[f"{topic_prefix}/courts"]
    settings = Settings(
        var_dir=tmp_path / "var", scheduler=True, mqtt_url=mqtt_url, dispatch_every_seconds=0.3, _env_file=None
    )
    admin_user, apw = make_user({"role": "admin"})
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"})
    try:
        with TestClient(create_app(settings, engine=engine, migrate_on_start=False)) as client:
            admin = login(client, admin_user.email, apw)
            client.patch("/api/v1/resources/court-1/rules", json={"opening_hours": ALL_DAY}, headers=admin)
            client.post(f"/api/v1/users/{alice.id}/credentials", json={"kind": "badge", "value": "a2a2"}, headers=admin)
            start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            r = client.post(
                "/api/v1/reservations",
                headers=login(client, alice.email, pw),
                json={
                    "resource": "court-1",
                    "start": start.isoformat(),
                    "end": (start + timedelta(hours=1)).isoformat(),
                },
            )
            assert r.status_code == 201, r.text
            assert _wait(lambda: "A2A2" in device.users)
            # The device loses its memory (a replacement unit) and boots: the gateway re-syncs it in full.
            device.users.clear()
            device.reboot()
            assert _wait(lambda: "A2A2" in device.users), "no re-sync after the reboot"

            def state() -> dict:
                rows = client.get("/api/v1/controllers", headers=admin).json()
                return next(c for c in rows if c["key"] == "courts-ctl")

            assert _wait(lambda: state()["state"] == "online" and state()["last_sync"] is not None)
            assert client.get("/api/v1/controllers", headers=login(client, alice.email, pw)).status_code == 403
    finally:
        fleet.stop()
