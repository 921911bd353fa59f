"""Windows on single doors: a source may open doors beside (or instead of) its resource's doors,
and every consumer (desired state, transitions, the decision index, event explanation) follows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from access.decisions import DecisionIndex
from access.desired import may_enter
from access.events import explaining_window
from access.models import AccessWindow, Credential, Door, Transition
from access.protocol import compact_hex
from access.service import state_for_doors
from access.windows import set_windows
from bms.models import Resource
from core.db import ident as ident_
from core.db import read_session, utcnow, write_session

pytestmark = pytest.mark.usefixtures("example_site")


def _id(s, model, key):
    return s.exec(select(model).where(model.key == key)).one().id


@pytest.fixture
def badge(engine, make_user):
    user = make_user({"role": "resident", "site": "les-tilleuls"})[0]
    with write_session(engine) as s:
        value = "0a0b0c0d"
        cred = Credential(user_id=user.id, kind="badge", format="uid", value=value, compact=compact_hex(value))
        s.add(cred)
        s.flush()
        return user.id, cred.id


def test_a_source_opens_its_resource_doors_and_the_doors_it_names(engine, badge):
    user, cred = badge
    start = utcnow().replace(microsecond=0) + timedelta(hours=2)
    end = start + timedelta(hours=3)
    with write_session(engine) as s:
        court = _id(s, Resource, "court-1")
        gate, lobby, party = (_id(s, Door, k) for k in ("court-gate", "lobby-door", "party-room-door"))
        set_windows(s, "reservation", 900, court, [user], start, end, "badge", active=True, door_ids=[lobby])
        set_windows(s, "visit", 901, None, [user], start, end, "badge", active=True, door_ids=[party])
    with read_session(engine) as s:
        state = state_for_doors(s, [gate, lobby, party], utcnow())
        rows = s.exec(select(AccessWindow).where(AccessWindow.source_id.in_([900, 901]))).all()
        planned = {(t.door_id, t.action, t.source) for t in s.exec(select(Transition)).all()}
        index = DecisionIndex()
        index.load(s)
    assert sorted((w.source_id, w.resource_id is None, w.door_id) for w in rows) == [
        (900, False, None),
        (900, True, lobby),
        (901, True, party),
    ]
    inside = start + timedelta(minutes=1)
    for door in (gate, lobby, party):
        assert may_enter(state, door, cred, inside)
        assert index.decide(door, "badge", "0a0b0c0d", inside).allowed
        assert not index.decide(door, "badge", "0a0b0c0d", end).allowed
    assert {(gate, "grant", "reservation:900"), (lobby, "grant", "reservation:900")} <= planned
    assert {(party, "grant", "visit:901"), (party, "revoke", "visit:901")} <= planned
    assert index.decide(party, "badge", "0a0b0c0d", inside).source == "visit:901"
    with read_session(engine) as s:
        found = explaining_window(s, party, user, inside)
        assert found is not None and (found.source_type, found.source_id) == ("visit", 901)

    with write_session(engine) as s:  # the extra door dropped: its grant goes, the resource's stays
        set_windows(s, "reservation", 900, court, [user], start, end, "badge", active=True)
        set_windows(s, "visit", 901, None, [user], start, end, "badge", active=False, door_ids=[party])
    with read_session(engine) as s:
        index.refresh(s)
        state = state_for_doors(s, [gate, lobby, party], utcnow())
    assert may_enter(state, gate, cred, inside) and not may_enter(state, lobby, cred, inside)
    assert not may_enter(state, party, cred, inside)
    assert index.decide(gate, "badge", "0a0b0c0d", inside).allowed
    assert index.decide(lobby, "badge", "0a0b0c0d", inside).reason == "no_window"
    assert index.decide(party, "badge", "0a0b0c0d", inside).reason == "no_window"


def test_a_qr_code_is_sealed_and_decided_online_on_a_door_window(engine, client, make_user):
    """A visitor's QR: stored as a keyed token (never in clear), never planned for a controller,
    granted by the gateway at the doors its visit names and nowhere else."""
    from tests.conftest import login

    admin_user, apw = make_user({"role": "admin"})
    admin = login(client, admin_user.email, apw)
    visitor, _ = make_user(name="Visitor")
    code = "VISIT-7f3a9c2e"
    r = client.post(f"/api/v1/users/{visitor.id}/credentials", json={"kind": "qr", "value": code}, headers=admin)
    assert r.status_code == 201 and r.json()["value"] == "****"
    now = utcnow()
    with write_session(engine) as s:
        stored = s.exec(select(Credential).where(Credential.user_id == visitor.id)).one()
        assert stored.value.startswith("h1:") and code not in stored.value and stored.secret
        lobby = _id(s, Door, "lobby-door")
        set_windows(
            s,
            "visit",
            950,
            None,
            [visitor.id],
            now - timedelta(minutes=1),
            now + timedelta(hours=1),
            "badge",
            active=True,
            door_ids=[lobby],
        )
        planned = s.exec(select(Transition).where(Transition.source == "visit:950")).all()
    # planned (mode badge), but the dispatcher only ever stores badges on controllers
    assert planned and all(t.credential_id == stored.id for t in planned)
    from schedules.dispatch import Due, commands_for

    with read_session(engine) as s:
        cmds = commands_for(
            s, [Due(ident_(t), "entrance-ctl", t.door_id, t.credential_id, t.action, 1) for t in planned], now
        )
    assert set(cmds.values()) == {None}
    yes = client.post(
        "/api/v1/access/decisions", json={"door": "lobby-door", "kind": "qr", "value": code}, headers=admin
    )
    assert yes.json()["allowed"] and yes.json()["source"] == "visit:950"
    no = client.post(
        "/api/v1/access/decisions", json={"door": "court-gate", "kind": "qr", "value": code}, headers=admin
    )
    assert no.json()["reason"] == "no_window"
    forged = client.post(
        "/api/v1/access/decisions", json={"door": "lobby-door", "kind": "qr", "value": "VISIT-0"}, headers=admin
    )
    assert forged.json()["reason"] == "unknown_credential"
