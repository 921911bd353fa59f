"""Online decisions: the in-memory index answers what the pure desired state answers, follows the
database through the change log, serves the decisions API, and lets an `authorized` door open
on an esp-rfid controller that does not store the card (both databases, real broker)."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from access.decisions import DecisionIndex, trim_changes
from access.desired import may_enter
from access.models import AccessEvent, AccessWindow, Controller, Credential, Door
from access.protocol import compact_hex
from access.service import state_for_doors
from access.windows import set_windows
from bms.models import Resource
from bookgate.controllers import start_drivers
from config import Settings
from core.db import read_session, utcnow, write_session
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
from tests.conftest import login
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import wait_until

pytestmark = pytest.mark.usefixtures("example_site")


def _open(s, visit: int, resource: int, users: list[int], now, since_minutes: int = 5) -> None:
    """An `authorized` window under way from a few minutes ago for an hour."""
    start, end = now - timedelta(minutes=since_minutes), now + timedelta(hours=1)
    set_windows(s, "visit", visit, resource, users, start, end, "authorized", active=True)


def _ids(engine, model, *keys):
    with read_session(engine) as s:
        return [s.exec(select(model).where(model.key == k)).one().id for k in keys]


@pytest.fixture
def badges(engine, make_user):
    """Six residents with a badge each."""
    out = []
    users = [make_user({"role": "resident", "site": "les-tilleuls"})[0] for _ in range(6)]
    with write_session(engine) as s:
        for i, user in enumerate(users):
            value = f"c0de{i:04x}"
            cred = Credential(user_id=user.id, kind="badge", format="uid", value=value, compact=compact_hex(value))
            s.add(cred)
            s.flush()
            out.append((user.id, cred.id, cred.value))
    return out


def test_the_index_answers_what_the_desired_state_answers(engine, badges):
    rng = random.Random(7)
    court1, court2, meeting = _ids(engine, Resource, "court-1", "court-2", "meeting-room")
    doors = _ids(engine, Door, "court-gate", "lobby-door", "meeting-room-door", "party-room-door")
    t0 = utcnow().replace(microsecond=0) + timedelta(hours=1)
    with write_session(engine) as s:
        for n in range(40):
            start = t0 + timedelta(minutes=15 * rng.randrange(0, 40))
            uid = rng.choice(badges)[0]
            mode = rng.choice(["badge", "authorized", "badge+authorized", "free"])
            set_windows(
                s,
                "visit",
                n,
                rng.choice([court1, court2, meeting]),
                [uid],
                start,
                start + timedelta(hours=1),
                mode,
                active=True,
            )
        limited = s.get(Credential, badges[0][1])
        limited.valid_until = t0 + timedelta(hours=3)  # a badge that expires mid-way
        s.add(limited)
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s, now=t0 - timedelta(hours=1))
        state = state_for_doors(s, doors, t0 - timedelta(hours=1))
    checked = allowed = 0
    for minute in range(0, 11 * 60, 7):
        at = t0 + timedelta(minutes=minute)
        for door in doors:
            for _uid, cred_id, value in badges:
                got = index.decide(door, "badge", value.lower(), at)
                assert got.allowed == may_enter(state, door, cred_id, at), (door, value, at, got)
                checked += 1
                allowed += got.allowed
    assert checked > 2000 and 50 < allowed < checked  # both answers occur
    assert index.decide(10_000, "badge", badges[0][2], t0).reason == "unknown_door"
    assert index.decide(doors[0], "badge", "FFFF", t0).reason == "unknown_credential"


def test_the_index_follows_the_database_through_the_change_log(engine, badges):
    (court1,) = _ids(engine, Resource, "court-1")
    (gate,) = _ids(engine, Door, "court-gate")
    user, cred_id, value = badges[0]
    now = utcnow()
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
    assert index.decide(gate, "badge", value, now).reason == "no_window"
    with write_session(engine) as s:
        _open(s, 1, court1, [user], now, since_minutes=5)
    with read_session(engine) as s:
        assert index.refresh(s) == 1
    yes = index.decide(gate, "badge", value, now)
    assert yes.allowed and yes.online and yes.source == "visit:1"
    with write_session(engine) as s:  # revoked: refused at the very next presentation
        cred = s.get(Credential, cred_id)
        cred.revoked_at = now
        s.add(cred)
        from access.decisions import note_credential

        note_credential(s, cred_id)
    with read_session(engine) as s:
        index.refresh(s)
    assert index.decide(gate, "badge", value, now).reason == "unknown_credential"
    with write_session(engine) as s:
        set_windows(s, "visit", 1, court1, [], now, now, "authorized", active=False)
    with read_session(engine) as s:
        index.refresh(s)
    assert index.size()["windows"] == 0
    # A node that fell behind a trimmed log reloads in full rather than missing changes.
    behind = DecisionIndex()
    with read_session(engine) as s:
        behind.load(s)
    with write_session(engine) as s:
        _open(s, 2, court1, [badges[1][0]], now, since_minutes=1)
        _open(s, 3, court1, [badges[2][0]], now, since_minutes=1)
    with write_session(engine) as s:
        trim_changes(s, now + timedelta(days=1))
        _open(s, 4, court1, [badges[3][0]], now, since_minutes=1)
    with read_session(engine) as s:
        behind.refresh(s)
    assert all(behind.decide(gate, "badge", badges[i][2], now).allowed for i in (1, 2, 3))


def test_decisions_api(client, engine, badges, make_user):
    (meeting,) = _ids(engine, Resource, "meeting-room")
    user, _cred, value = badges[0]
    now = utcnow()
    with write_session(engine) as s:
        _open(s, 9, meeting, [user], now, since_minutes=5)
    admin_user, apw = make_user({"role": "admin"})
    admin = login(client, admin_user.email, apw)
    r = client.post("/api/v1/access/decisions", json={"door": "meeting-room-door", "value": value}, headers=admin)
    assert r.status_code == 200 and r.json()["allowed"] and r.json()["source"] == "visit:9"
    no = client.post("/api/v1/access/decisions", json={"door": "court-gate", "value": value}, headers=admin).json()
    assert (no["allowed"], no["reason"]) == (False, "no_window")
    pin = client.post(
        "/api/v1/access/decisions", json={"door": "meeting-room-door", "kind": "pin", "value": "1234"}, headers=admin
    ).json()
    assert pin["allowed"] is False
    with read_session(engine) as s:
        logged = {e.id: e for e in s.exec(select(AccessEvent)).all()}
    assert logged[r.json()["event_id"]].kind == "granted" and logged[r.json()["event_id"]].decided_by == "gateway"
    assert logged[pin["event_id"]].presented is None  # a PIN is never written down
    assert (
        client.post("/api/v1/access/decisions", json={"door": "nope", "value": "AA"}, headers=admin).status_code == 404
    )
    bad = client.post(
        "/api/v1/access/decisions", json={"door": "court-gate", "kind": "card", "value": "AA"}, headers=admin
    )
    assert bad.status_code == 422
    resident, rpw = make_user({"role": "resident", "site": "les-tilleuls"})
    denied = client.post(
        "/api/v1/access/decisions",
        json={"door": "court-gate", "value": value},
        headers=login(client, resident.email, rpw),
    )
    assert denied.status_code == 403


def test_an_authorized_door_opens_on_the_gateways_word(engine, badges, mqtt_url, topic_prefix):  # noqa: F811
    """The device does not store the card (authorized mode is decided online): it reports the
    presentation, the gateway decides from its index and releases the door with opendoor."""
    (meeting,) = _ids(engine, Resource, "meeting-room")
    user, _cred, value = badges[0]
    with write_session(engine) as s:
        ctl = s.exec(select(Controller).where(Controller.key == "rooms-ctl")).one()
        ctl.settings = {**ctl.settings, "topic": f"{topic_prefix}/rooms"}
        s.add(ctl)
        now = utcnow()
        _open(s, 5, meeting, [user], now, since_minutes=5)
        doorip = ctl.settings["doorip"]
    fleet = SimulatorFleet(
        MqttSettings.from_url(mqtt_url), [DeviceConfig(f"{topic_prefix}/rooms", doorip, "rooms", doors=2)]
    )
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
    host = start_drivers(engine, Settings(mqtt_url=mqtt_url, _env_file=None), index)
    fleet.start()
    try:
        assert fleet.wait_ready(10)
        assert wait_until(lambda: host.connected, 10)
        device = fleet[f"{topic_prefix}/rooms"]
        assert device.present_card(bytes.fromhex(value)) == "Denied"  # the device alone would refuse
        assert wait_until(lambda: device.door_releases == 1, 5), "the gateway did not release the door"
        assert device.present("BADC0DE") == "Denied"
        time.sleep(0.5)
        assert device.door_releases == 1  # an unknown card stays out

        def logged():
            with read_session(engine) as s:
                return s.exec(select(AccessEvent).where(AccessEvent.decided_by == "gateway")).all()

        assert wait_until(lambda: len(logged()) == 1, 5)
        ev = logged()[0]
        assert (ev.kind, ev.source, ev.user_id) == ("granted", "visit:5", user)
    finally:
        host.stop()
        fleet.stop()


def test_a_badge_is_found_in_the_spelling_its_reader_uses(engine, badges):
    (meeting,) = _ids(engine, Resource, "meeting-room")
    (door,) = _ids(engine, Door, "meeting-room-door")
    user, cred_id, _value = badges[0]  # c0de0000: two bytes below 0x10
    now = utcnow()
    with write_session(engine) as s:
        _open(s, 31, meeting, [user], now, since_minutes=5)
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
    assert index.decide(door, "badge", "C0DE0000", now).allowed  # hex, any case
    assert index.decide(door, "badge", "c0de00", now, ("hex_compact",)).credential_id == cred_id
    assert index.decide(door, "badge", "c0de00", now).reason == "unknown_credential"  # not in hex
    assert index.decide(door, "badge", "c0de0000", now, ("decimal",)).reason == "unknown_credential"


def _meeting_index(engine, badges, *, visit: int):  # type: ignore[no-untyped-def]
    """The first badge holder with an `authorized` window under way on the meeting room (source
    visit:<visit>), and a freshly loaded index: (door, badge value, now, index)."""
    (meeting,) = _ids(engine, Resource, "meeting-room")
    (door,) = _ids(engine, Door, "meeting-room-door")
    user, _cred, value = badges[0]
    now = utcnow()
    with write_session(engine) as s:
        _open(s, visit, meeting, [user], now, since_minutes=5)
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
    return door, value, now, index


def test_a_decision_during_a_window_rewrite_never_sees_the_person_without_windows(engine, badges):
    """`decide` reads without the lock while the log replay rewrites a source: the person's table is
    swapped whole, so a window that stays is never missing in between."""
    import threading

    door, value, now, index = _meeting_index(engine, badges, visit=41)
    with read_session(engine) as s:
        rows = s.exec(select(AccessWindow).where(AccessWindow.source_id == 41)).all()
    stop = threading.Event()
    misses = []

    def ask():
        while not stop.is_set():
            if not index.decide(door, "badge", value, now).allowed:
                misses.append(1)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        for _ in range(20_000):
            index._put_source("visit:41", rows)
    finally:
        stop.set()
        asker.join()
    assert misses == []


def test_reimporting_doors_reaches_the_decision_index(engine, badges):
    """A site file that moves a door to other resources must change what the index decides."""
    import yaml

    from bookgate.provision import apply_site_file
    from config.site import example_path, parse_site_document
    from core.audit import SYSTEM

    door, value, now, index = _meeting_index(engine, badges, visit=51)
    assert index.decide(door, "badge", value, now).allowed
    doc = yaml.safe_load(example_path().read_text())
    for d in doc["sites"][0]["doors"]:
        if d["key"] == "meeting-room-door":
            d["resources"] = ["party-room"]
    apply_site_file(engine, parse_site_document(doc), SYSTEM)
    with read_session(engine) as s:
        index.refresh(s)
    assert index.decide(door, "badge", value, now).reason == "no_window"
