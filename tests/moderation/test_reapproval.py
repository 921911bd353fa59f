"""Re-approval: on a venue that asks for it, a resident's reschedule of a confirmed booking waits
for a manager, and the booking keeps its original slot meanwhile."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bms.models import ReservationChange
from core.db import read_session
from tests.moderation.conftest import book, local, request_slot


@pytest.fixture
def confirmed(client, moderated):
    """A confirmed booking of Alice's on p-court (manual), on a venue that wants re-approval."""
    manager = moderated["manager"].headers
    r = client.put("/api/v1/moderation/policies/p-court", json={"reapprove_changes": True}, headers=manager)
    assert r.status_code == 200, r.text
    start = local(6, 10)
    made = request_slot(client, moderated["alice"], "p-court", start)
    assert client.post(f"/api/v1/moderation/{made['id']}/approve", json={}, headers=manager).status_code == 200
    return made["id"], start


def _reschedule(client, who, rid, start):
    return client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        headers=who.headers,
        json={"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    )


def test_change_waits_and_the_original_slot_is_held(client, moderated, confirmed):
    rid, start = confirmed
    new = start + timedelta(hours=3)
    r = _reschedule(client, moderated["alice"], rid, new)
    assert r.status_code == 200, r.text
    body = r.json()
    assert datetime.fromisoformat(body["start"]) == start  # not moved yet
    assert datetime.fromisoformat(body["pending_change"]["start"]) == new
    # The original slot is still Alice's: Carol's request for it cannot be approved.
    carol = request_slot(client, moderated["carol"], "p-court", start)
    approve = client.post(f"/api/v1/moderation/{carol['id']}/approve", json={}, headers=moderated["manager"].headers)
    assert approve.status_code == 409 and approve.json()["code"] == "slot_taken"
    # The manager sees the change and approves it: the booking moves.
    changes = client.get("/api/v1/moderation/changes", headers=moderated["manager"].headers).json()
    assert [c["reservation"]["id"] for c in changes] == [rid]
    done = client.post(f"/api/v1/moderation/changes/{changes[0]['id']}/approve", headers=moderated["manager"].headers)
    assert done.status_code == 200 and done.json()["status"] == "approved"
    got = client.get(f"/api/v1/reservations/{rid}", headers=moderated["alice"].headers).json()
    assert datetime.fromisoformat(got["start"]) == new and got["pending_change"] is None and got["changes"] == 1
    again = client.post(f"/api/v1/moderation/changes/{changes[0]['id']}/approve", headers=moderated["manager"].headers)
    assert again.status_code == 409 and again.json()["code"] == "already_decided"


def test_rejected_change_keeps_the_booking(client, moderated, confirmed):
    rid, start = confirmed
    _reschedule(client, moderated["alice"], rid, start + timedelta(hours=2))
    cid = client.get("/api/v1/moderation/changes", headers=moderated["manager"].headers).json()[0]["id"]
    r = client.post(f"/api/v1/moderation/changes/{cid}/reject", json={}, headers=moderated["manager"].headers)
    assert r.status_code == 422
    r = client.post(
        f"/api/v1/moderation/changes/{cid}/reject",
        json={"reason": "court closed then"},
        headers=moderated["manager"].headers,
    )
    assert r.status_code == 200 and r.json()["reason"] == "court closed then"
    got = client.get(f"/api/v1/reservations/{rid}", headers=moderated["alice"].headers).json()
    assert datetime.fromisoformat(got["start"]) == start and got["pending_change"] is None


def test_change_to_a_slot_taken_meanwhile_is_409_and_changes_nothing(client, moderated, confirmed):
    rid, start = confirmed
    new = start + timedelta(hours=4)
    _reschedule(client, moderated["alice"], rid, new)
    cid = client.get("/api/v1/moderation/changes", headers=moderated["manager"].headers).json()[0]["id"]
    # The manager books the wanted slot for someone else first.
    assert book(client, moderated["manager"], "p-court", new, new + timedelta(hours=1)).status_code == 201
    r = client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=moderated["manager"].headers)
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"
    got = client.get(f"/api/v1/reservations/{rid}", headers=moderated["alice"].headers).json()
    assert datetime.fromisoformat(got["start"]) == start


def test_scope_and_who_skips_re_approval(client, moderated, confirmed):
    rid, start = confirmed
    _reschedule(client, moderated["alice"], rid, start + timedelta(hours=2))
    cid = client.get("/api/v1/moderation/changes", headers=moderated["manager"].headers).json()[0]["id"]
    other = moderated["other_manager"].headers
    assert client.get("/api/v1/moderation/changes", headers=other).json() == []
    assert client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=other).status_code == 404
    assert (
        client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=moderated["alice"].headers).status_code == 403
    )
    # A manager's own reschedule applies at once (and a newer request replaces an older one).
    moved = _reschedule(client, moderated["manager"], rid, start + timedelta(hours=5))
    assert datetime.fromisoformat(moved.json()["start"]) == start + timedelta(hours=5)
    # The earlier request now refers to a booking that changed: approving it is refused.
    r = client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=moderated["manager"].headers)
    assert r.status_code == 409 and r.json()["code"] == "changed_meanwhile"


def test_a_change_refused_because_the_booking_moved_stays_void(client, moderated, confirmed, engine):
    """The refusal leaves a trace (AppError keep=True): the unit of work keeps the void, so the
    request leaves the managers' list and a second attempt finds it decided."""
    rid, start = confirmed
    manager = moderated["manager"].headers
    _reschedule(client, moderated["alice"], rid, start + timedelta(hours=2))
    cid = client.get("/api/v1/moderation/changes", headers=manager).json()[0]["id"]
    assert _reschedule(client, moderated["manager"], rid, start + timedelta(hours=5)).status_code == 200
    r = client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=manager)
    assert r.status_code == 409 and r.json()["code"] == "changed_meanwhile"
    with read_session(engine) as s:
        change = s.get(ReservationChange, cid)
        assert change.status == "void" and change.reason == "the booking changed since the request"
    assert client.get("/api/v1/moderation/changes", headers=manager).json() == []
    again = client.post(f"/api/v1/moderation/changes/{cid}/approve", headers=manager)
    assert again.status_code == 409 and again.json()["code"] == "already_decided"


def test_without_the_policy_changes_apply_at_once(client, moderated):
    manager = moderated["manager"].headers
    start = local(7, 10)
    made = request_slot(client, moderated["alice"], "p-court", start)
    client.post(f"/api/v1/moderation/{made['id']}/approve", json={}, headers=manager)
    r = _reschedule(client, moderated["alice"], made["id"], start + timedelta(hours=1))
    assert datetime.fromisoformat(r.json()["start"]) == start + timedelta(hours=1)
    assert r.json()["pending_change"] is None
