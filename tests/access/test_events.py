"""Door events: stored, linked to the booking that explains them, checking it in; no-shows
release the slot and revoke the grants; the events API and its scopes (both databases)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from access import events
from access.models import AccessEvent, AccessWindow, Transition
from access.protocol import DoorEvent
from bms.models import Reservation
from bookgate.app import entry_listeners
from core.db import read_session, write_session
from schedules.dispatch import dispatch_once
from schedules.noshow import mark_no_shows
from tests.conftest import login
from tests.schedules.test_dispatch import Recorder, booked  # noqa: F401 - fixture reused

pytestmark = pytest.mark.usefixtures("example_site")


def _event(engine, uid: str | None, at: datetime, kind: str = "granted", ctl: str = "courts-ctl", output=1):
    with write_session(engine) as s:
        row = events.record(s, DoorEvent(ctl, kind, uid, output, at, {"access": "Always"}), listeners=entry_listeners())
        return row.id if row else None


def _reservation(engine, rid: int) -> Reservation:
    with read_session(engine) as s:
        return s.get(Reservation, rid)


def test_first_granted_entry_in_the_window_checks_the_booking_in(client, engine, booked, make_user):  # noqa: F811
    res, alice = booked
    a_start = datetime.fromisoformat(res["access_start"])
    # Before the window: stored, but nothing explains it and nothing is checked in.
    early = _event(engine, "b0b0b0b0", a_start - timedelta(minutes=5))
    assert _reservation(engine, res["id"]).status == "confirmed"
    # Inside the window (the gate opens 10 minutes before the start): checked in, linked.
    first = _event(engine, "B0B0B0B0", a_start + timedelta(minutes=2))
    r = _reservation(engine, res["id"])
    assert r.status == "checked_in" and "court-gate" in r.status_reason
    second = _event(engine, "B0B0B0B0", a_start + timedelta(minutes=3))  # a second entry changes nothing
    assert _reservation(engine, res["id"]).status == "checked_in"
    unknown = _event(engine, "DEADBEEF", a_start + timedelta(minutes=4), kind="denied")
    with read_session(engine) as s:
        rows = {e.id: e for e in s.exec(select(AccessEvent)).all()}
        windows = s.exec(select(AccessWindow).where(AccessWindow.source_id == res["id"])).all()
    assert rows[early].source is None and rows[early].user_id is not None
    assert rows[first].source == rows[second].source == f"reservation:{res['id']}"
    assert rows[unknown].credential_id is None and rows[unknown].presented == "DEADBEEF"
    assert len(windows) == 1  # checking in keeps the grant: nothing re-planned

    admin_user, apw = make_user({"role": "admin"})
    admin = login(client, admin_user.email, apw)
    got = client.get("/api/v1/access/events", params={"source": f"reservation:{res['id']}"}, headers=admin).json()
    assert [e["id"] for e in got] == [second, first]  # newest first
    assert got[0]["door"] == "court-gate" and got[0]["controller"] == "courts-ctl"
    denied = client.get("/api/v1/access/events", params={"kind": "denied"}, headers=admin).json()
    assert [e["id"] for e in denied] == [unknown]
    bad = client.get("/api/v1/access/events", params={"kind": "opened"}, headers=admin)
    assert bad.status_code == 422
    assert client.get("/api/v1/access/events", params={"door": "nope"}, headers=admin).status_code == 404

    # Alice planned the booking but Bob held the badge: the events are Bob's, not hers.
    assert client.get("/api/v1/access/events", headers=alice).json() == []
    # A manager of another venue sees none of the courts' events.
    rooms, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"})
    assert client.get("/api/v1/access/events", headers=login(client, rooms.email, mpw)).json() == []
    sports, spw = make_user({"role": "venue_manager", "venue": "sports"})
    seen = client.get("/api/v1/access/events", headers=login(client, sports.email, spw)).json()
    assert {e["id"] for e in seen} == {early, first, second, unknown}


def test_events_of_unknown_controllers_are_ignored(engine):
    with write_session(engine) as s:
        assert events.record(s, DoorEvent("nope-ctl", "granted", "AA", 1, datetime.now().astimezone(), {})) is None


def test_no_check_in_marks_a_no_show_releases_the_slot_and_revokes(client, engine, booked, make_user):  # noqa: F811
    res, _ = booked
    start = datetime.fromisoformat(res["start"])
    a_start = datetime.fromisoformat(res["access_start"])
    send = Recorder()
    assert dispatch_once(engine, send, now=a_start - timedelta(hours=1)) == 1  # the grant went out
    assert mark_no_shows(engine, start + timedelta(minutes=14)) == 0  # court-1 allows 15 minutes
    assert mark_no_shows(engine, start + timedelta(minutes=15)) == 1
    r = _reservation(engine, res["id"])
    assert r.status == "no_show" and "15 minutes" in r.status_reason
    assert mark_no_shows(engine, start + timedelta(minutes=16)) == 0
    with read_session(engine) as s:
        assert s.exec(select(AccessWindow).where(AccessWindow.source_id == res["id"])).all() == []
        pending = s.exec(select(Transition).where(Transition.status == "pending")).all()
    assert [t.action for t in pending] == ["revoke"]
    dispatch_once(engine, send, now=start + timedelta(minutes=15, seconds=1))
    assert type(send.sent[-1][1]).__name__ == "Revoke"
    # The slot is free again: someone else may take it.
    carol, cpw = make_user({"role": "resident", "site": "les-tilleuls"})
    again = client.post(
        "/api/v1/reservations",
        headers=login(client, carol.email, cpw),
        json={"resource": "court-1", "start": res["start"], "end": res["end"]},
    )
    assert again.status_code == 201, again.text


def test_checked_in_bookings_are_not_no_shows(engine, booked):  # noqa: F811
    res, _ = booked
    start = datetime.fromisoformat(res["start"])
    _event(engine, "B0B0B0B0", start + timedelta(minutes=1))
    assert mark_no_shows(engine, start + timedelta(minutes=30)) == 0
    assert _reservation(engine, res["id"]).status == "checked_in"


def test_a_key_not_returned_is_a_message_for_the_staff(engine, make_user):
    """The key cabinet reports a key still out after its window: stored, and told through the outbox."""
    from core.outbox import OutboxMessage

    holder, _ = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice")
    with write_session(engine) as s:
        from access.models import Credential

        s.add(Credential(user_id=holder.id, kind="badge", format="uid", value="a1b2c3d4", compact="a1b2c3d4"))
    at = datetime.now().astimezone()
    with write_session(engine) as s:
        row = events.record(s, DoorEvent("cabinet-ctl", "key_overdue", "a1b2c3d4", 1, at, {}))
        assert row is not None and row.kind == "key_overdue" and row.user_id == holder.id
    with read_session(engine) as s:
        told = s.exec(select(OutboxMessage).where(OutboxMessage.kind == "access.key_overdue")).one()
    assert told.payload["controller"] == "cabinet-ctl" and told.payload["holder"] == "Alice"
    assert told.payload["site"] == "les-tilleuls" and told.payload["door"].startswith("Key cabinet")
