"""A resident's standing level reaches the building's esp-rfid controller as an always-valid card,
and taking the level away removes the card within seconds: the running server (clock, dispatcher,
driver), a real broker and a simulated device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import select

from access.desired import OPEN_END
from access.levels import sync_levels
from access.models import AccessLevel, Door, Transition
from bookgate.app import create_app
from bookgate.provision import apply_site_file
from config import Settings
from config.site import example_path, parse_site_document
from core.audit import SYSTEM
from core.db import read_session, utcnow, write_session
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatedController, SimulatorFleet
from tests.conftest import login
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import wait_until

BADGE = "a1b2c3d4"  # no byte below 0x10: the PN532 reader spells it as stored


@dataclass
class Entrance:
    client: TestClient
    device: SimulatedController
    admin: dict[str, str]
    alice_id: int
    level_id: int


@pytest.fixture
def entrance(engine, make_user, tmp_path, mqtt_url, topic_prefix) -> Iterator[Entrance]:  # noqa: F811
    doc = yaml.safe_load(example_path().read_text())
    ctl = next(c for c in doc["sites"][0]["controllers"] if c["key"] == "entrance-ctl")
    ctl["settings"]["topic"] = f"{topic_prefix}/entrance"
    apply_site_file(engine, parse_site_document(doc), SYSTEM)
    fleet = SimulatorFleet(
        MqttSettings.from_url(mqtt_url),
        [DeviceConfig(f"{topic_prefix}/entrance", ctl["settings"]["doorip"], "entrance", reader="pn532")],
    )
    fleet.start()
    assert fleet.wait_ready(10)
    admin_user, apw = make_user({"role": "admin"})
    alice, _pw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    with write_session(engine) as s:
        sync_levels(s, utcnow())  # what the clock's level job does on start and every few minutes
        level_id = s.exec(select(AccessLevel.id).where(AccessLevel.key == "residents")).one()
    # the safety-net poll is a minute away: pushes must come from the clock's exact wake-ups
    settings = Settings(
        var_dir=tmp_path / "var", scheduler=True, mqtt_url=mqtt_url, dispatch_every_seconds=60, _env_file=None
    )
    try:
        with TestClient(create_app(settings, engine=engine, migrate_on_start=False)) as client:
            admin = login(client, admin_user.email, apw)
            assert wait_until(lambda: client.app.state.driver_host.connected, 10)
            yield Entrance(client, fleet[f"{topic_prefix}/entrance"], admin, alice.id, level_id)
    finally:
        fleet.stop()


def test_removing_a_level_revokes_on_the_controller_within_seconds(entrance, engine):
    c, device = entrance.client, entrance.device
    url = f"/api/v1/users/{entrance.alice_id}/credentials"
    r = c.post(url, json={"kind": "badge", "value": BADGE}, headers=entrance.admin)
    assert r.status_code == 201, r.text
    assert wait_until(lambda: BADGE in device.users, 20), "the level's grant never reached the controller"
    card = device.users[BADGE]
    assert card.validuntil == int(OPEN_END.timestamp())  # valid day and night, without a re-grant
    assert device.present_card(bytes.fromhex(BADGE)) == "Always"

    started = time.monotonic()
    r = c.delete(f"/api/v1/access-levels/{entrance.level_id}/holders/{entrance.alice_id}", headers=entrance.admin)
    assert r.status_code == 200, r.text
    assert wait_until(lambda: BADGE not in device.users, 10), "the revoke never reached the controller"
    took = time.monotonic() - started
    assert took < 5, f"revoking took {took:.1f}s"
    assert device.present_card(bytes.fromhex(BADGE)) == "Denied"

    def settled() -> bool:
        with read_session(engine) as s:
            return bool(
                s.exec(
                    select(Transition).where(
                        Transition.action == "revoke", Transition.status == "done", Transition.door_id == lobby
                    )
                ).all()
            )

    with read_session(engine) as s:
        lobby = s.exec(select(Door.id).where(Door.key == "lobby-door")).one()
    assert wait_until(settled, 5), "the revoke was not settled"
