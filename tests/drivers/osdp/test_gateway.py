"""End to end through the composition root: the example site's OSDP line (the key cabinet and the
garage's pedestrian door) on libosdp's own PDs over a pty, driven by the driver the registry builds,
deciding with the gateway's decision index, recording events in the database."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select

from access.decisions import DecisionIndex, note_credential
from access.models import AccessEvent, Controller, Credential
from access.protocol import HoldOpen
from access.windows import set_windows
from bms.models import Resource
from bookgate.controllers import start_drivers
from config import Settings
from core.db import read_session, utcnow, write_session
from drivers.osdp.driver import OsdpDriver
from drivers.osdp.simulator import SimulatedLine, SimulatedPd
from tests.drivers.helpers import wait_until

ALICE, STRANGER = "04a10b2c3d4e80", "04b0b005b0b080"


def _state(engine, key: str) -> str:
    with read_session(engine) as s:
        return s.exec(select(Controller).where(Controller.key == key)).one().state


def _events(engine) -> list[AccessEvent]:
    with read_session(engine) as s:
        return list(s.exec(select(AccessEvent).order_by(col(AccessEvent.id))).all())


def test_a_residents_badge_opens_the_osdp_door_only_in_their_window(engine, example_site, make_user, tmp_path):
    line = SimulatedLine([SimulatedPd(1), SimulatedPd(2)]).start()  # new PDs: keyed by the gateway
    alice, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    other, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    now = utcnow()
    with write_session(engine) as s:
        for c in s.exec(select(Controller)).all():
            if c.driver == "osdp":  # the site's line, moved onto the pty; keys kept in tmp
                key_file = str(tmp_path / f"{c.key}.key")
                c.settings = {**c.settings, "port": line.port, "scbk_file": key_file, "install_mode": True}
            else:
                c.active = False  # this test is about the OSDP line only
            s.add(c)
        parking = s.exec(select(Resource).where(Resource.key == "visitor-parking")).one()
        for user, badge in ((alice, ALICE), (other, STRANGER)):
            cred = Credential(user_id=user.id, kind="badge", format="uid", value=badge, compact=badge)
            s.add(cred)
            s.flush()
            note_credential(s, cred.id)
        set_windows(
            s,
            "visit",
            9,
            parking.id,
            [alice.id],
            now - timedelta(minutes=5),
            now + timedelta(hours=1),
            "badge",
            active=True,
        )
        set_windows(
            s,
            "visit",
            10,
            parking.id,
            [other.id],
            now + timedelta(hours=3),
            now + timedelta(hours=4),
            "badge",
            active=True,
        )
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
    host = start_drivers(engine, Settings(mqtt_url="", _env_file=None), index)
    assert host is not None
    try:
        assert isinstance(host.drivers["osdp"], OsdpDriver)
        assert sorted(host.keys()) == ["cabinet-ctl", "garage-door-ctl"]
        assert wait_until(lambda: _state(engine, "garage-door-ctl") == "online", 10)
        door = line.pd(2)
        assert door.secure and door.keyed is not None  # install mode: the gateway set its own key

        door.present_card(bytes.fromhex(ALICE))
        assert wait_until(lambda: door.outputs_sent(1), 3)
        assert wait_until(lambda: _events(engine), 5)
        granted = _events(engine)[0]
        assert (granted.kind, granted.user_id, granted.source, granted.decided_by) == (
            "granted",
            alice.id,
            "visit:9",
            "gateway",
        )
        door.present_card(bytes.fromhex(STRANGER))  # their window is later today
        assert wait_until(lambda: len(_events(engine)) == 2, 5)
        denied = _events(engine)[1]
        assert (denied.kind, denied.user_id, denied.detail["reason"]) == ("denied", other.id, "no_window")
        assert len(door.outputs_sent(1)) == 1

        # the cabinet on the same line: Alice's window is not the car's, so its slot stays shut
        line.pd(1).present_card(bytes.fromhex(ALICE))
        assert wait_until(lambda: len(_events(engine)) == 3, 5)
        assert line.pd(1).outputs_sent() == [] and _events(engine)[2].kind == "denied"

        # a `free` window as the dispatcher would send it: held, then released
        assert host.send("garage-door-ctl", HoldOpen("h-1", 1, utcnow() + timedelta(hours=1))).ok
        assert door.is_on(1)
        assert host.send("garage-door-ctl", HoldOpen("h-2", 1, None)).ok
        assert not door.is_on(1)
    finally:
        host.stop()
        line.close()
