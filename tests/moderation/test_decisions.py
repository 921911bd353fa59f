from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlmodel import select

from bms.models import Reservation
from core.audit import AuditEntry
from core.db import read_session, write_session
from core.errors import AppError
from core.outbox import OutboxMessage
from moderation import service
from tests.moderation.conftest import local, principal_of, request_slot

Q = "/api/v1/moderation"


def test_queue_shows_history_and_conflicts_oldest_first(client, moderated, engine):
    carol, alice = moderated["carol"], moderated["alice"]
    start = local(3, 10)
    first = request_slot(client, carol, "p-court", start, beneficiaries=[moderated["bob"].id])
    second = request_slot(client, alice, "p-court", start + timedelta(minutes=30))
    other = request_slot(client, alice, "p-court", local(5, 10))
    cancelled = request_slot(client, carol, "p-court", local(6, 10))
    client.post(f"/api/v1/reservations/{cancelled['id']}/cancel", json={}, headers=carol.headers)
    r = client.get(f"{Q}/queue", headers=moderated["manager"].headers)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["reservation"]["id"] for i in items] == [first["id"], second["id"], other["id"]]
    head = items[0]
    assert head["requester"]["user_id"] == carol.id
    assert head["requester"]["cancellations"] == 1 and head["requester"]["active_reservations"] == 1
    assert [b["user_id"] for b in head["beneficiaries"]] == [moderated["bob"].id]
    assert head["pending_conflicts"] == [second["id"]] and head["holding_conflicts"] == []
    assert head["fits"] is True and head["venue"] == "p-sports"
    filtered = client.get(f"{Q}/queue", params={"requester": alice.id}, headers=moderated["manager"].headers).json()
    assert [i["reservation"]["id"] for i in filtered] == [second["id"], other["id"]]
    aged = client.get(f"{Q}/queue", params={"min_age_minutes": 60}, headers=moderated["manager"].headers).json()
    assert aged == []
    by_venue = client.get(f"{Q}/queue", params={"venue": "p-rooms"}, headers=moderated["manager"].headers).json()
    assert by_venue == []


def test_manager_of_another_venue_cannot_list_read_or_decide(client, moderated):
    req = request_slot(client, moderated["carol"], "p-court", local(3, 10))
    other = moderated["other_manager"].headers
    assert client.get(f"{Q}/queue", headers=other).json() == []
    assert client.get(f"{Q}/queue", params={"venue": "p-sports"}, headers=other).status_code == 404
    for method, path, body in (
        ("get", f"{Q}/{req['id']}", None),
        ("post", f"{Q}/{req['id']}/approve", {}),
        ("post", f"{Q}/{req['id']}/reject", {"reason": "no"}),
    ):
        r = client.request(method, path, json=body, headers=other)
        assert r.status_code == 404 and r.json()["code"] == "request_not_found", r.text
    missing = client.post(f"{Q}/999999/approve", json={}, headers=other)
    assert missing.status_code == 404 and missing.json()["code"] == "request_not_found"
    bulk = client.post(
        f"{Q}/decisions", json={"decisions": [{"reservation_id": req["id"], "action": "approve"}]}, headers=other
    ).json()
    assert bulk[0]["ok"] is False and bulk[0]["code"] == "request_not_found"
    resident = moderated["alice"].headers
    assert client.get(f"{Q}/queue", headers=resident).status_code == 403
    assert client.post(f"{Q}/{req['id']}/approve", json={}, headers=resident).status_code == 403
    check = client.get(f"/api/v1/reservations/{req['id']}", headers=moderated["carol"].headers).json()
    assert check["status"] == "pending"


def test_approve_rejects_competitors_and_tells_everyone(client, moderated, engine):
    start = local(3, 10)
    a = request_slot(client, moderated["carol"], "p-court", start, beneficiaries=[moderated["bob"].id])
    b = request_slot(client, moderated["alice"], "p-court", start + timedelta(minutes=30))
    c = request_slot(client, moderated["alice"], "p-court", start + timedelta(hours=1))  # back to back: survives
    r = client.post(f"{Q}/{a['id']}/approve", json={"note": "enjoy"}, headers=moderated["manager"].headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed" and r.json()["status_reason"] == "enjoy"
    lost = client.get(f"/api/v1/reservations/{b['id']}", headers=moderated["alice"].headers).json()
    assert lost["status"] == "rejected" and lost["status_reason"] == "the slot was given to another request"
    kept = client.get(f"/api/v1/reservations/{c['id']}", headers=moderated["alice"].headers).json()
    assert kept["status"] == "pending"
    with read_session(engine) as s:
        msgs = {
            m.payload["reservation_id"]: m for m in s.exec(select(OutboxMessage)).all() if "recipients" in m.payload
        }
        actions = [e.action for e in s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()]
    assert msgs[a["id"]].kind == "reservation.confirmed"
    assert msgs[a["id"]].payload["recipients"] == sorted([moderated["carol"].id, moderated["bob"].id])
    assert msgs[b["id"]].kind == "reservation.rejected" and msgs[b["id"]].payload["competing_with"] == a["id"]
    assert actions[-2:] == ["moderation.approve", "moderation.reject"]


def test_approve_cannot_double_book(client, moderated):
    start = local(3, 10)
    req = request_slot(client, moderated["carol"], "p-court", start)
    mine = client.post(
        "/api/v1/reservations",
        json={"resource": "p-court", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        headers=moderated["manager"].headers,
    )
    assert mine.json()["status"] == "confirmed"
    item = client.get(f"{Q}/{req['id']}", headers=moderated["manager"].headers).json()
    assert item["fits"] is False and item["holding_conflicts"][0]["reservation_id"] == mine.json()["id"]
    r = client.post(f"{Q}/{req['id']}/approve", json={}, headers=moderated["manager"].headers)
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"


def test_reject_needs_a_reason_shown_to_the_requester_and_decides_once(client, moderated):
    req = request_slot(client, moderated["carol"], "p-court", local(3, 10))
    manager = moderated["manager"].headers
    for body in ({}, {"reason": ""}):
        r = client.post(f"{Q}/{req['id']}/reject", json=body, headers=manager)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = client.post(f"{Q}/{req['id']}/reject", json={"reason": "court under repair"}, headers=manager)
    assert r.status_code == 200
    seen = client.get(f"/api/v1/reservations/{req['id']}", headers=moderated["carol"].headers).json()
    assert seen["status"] == "rejected" and seen["status_reason"] == "court under repair"
    again = client.post(f"{Q}/{req['id']}/approve", json={}, headers=manager)
    assert again.status_code == 409 and again.json()["code"] == "already_decided"


def test_a_request_changed_or_cancelled_meanwhile_is_409(client, moderated):
    manager, carol = moderated["manager"].headers, moderated["carol"].headers
    start = local(3, 10)
    req = request_slot(client, moderated["carol"], "p-court", start)
    seen = client.get(f"{Q}/{req['id']}", headers=manager).json()["version"]
    moved = client.post(
        f"/api/v1/reservations/{req['id']}/reschedule",
        json={"start": (start + timedelta(hours=2)).isoformat(), "end": (start + timedelta(hours=3)).isoformat()},
        headers=carol,
    )
    assert moved.status_code == 200, moved.text
    r = client.post(f"{Q}/{req['id']}/approve", json={"version": seen}, headers=manager)
    assert r.status_code == 409 and r.json()["code"] == "changed_meanwhile"
    client.post(f"/api/v1/reservations/{req['id']}/cancel", json={}, headers=carol)
    r = client.post(f"{Q}/{req['id']}/reject", json={"reason": "x"}, headers=manager)
    assert r.status_code == 409 and r.json()["code"] == "already_decided"


def test_bulk_decisions_each_on_its_own(client, moderated):
    start = local(3, 10)
    a = request_slot(client, moderated["carol"], "p-court", start)
    b = request_slot(client, moderated["alice"], "p-court", start)
    c = request_slot(client, moderated["alice"], "p-court", local(4, 10))
    manager = moderated["manager"].headers
    no_reason = {"decisions": [{"reservation_id": c["id"], "action": "reject"}]}
    assert client.post(f"{Q}/decisions", json=no_reason, headers=manager).status_code == 422
    body = {
        "decisions": [
            {"reservation_id": a["id"], "action": "approve"},
            {"reservation_id": b["id"], "action": "approve"},
            {"reservation_id": c["id"], "action": "reject", "reason": "closed that day"},
        ]
    }
    r = client.post(f"{Q}/decisions", json=body, headers=manager)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["ok"] for x in out] == [True, False, True]
    assert out[1]["code"] == "already_decided"  # b lost to a
    assert out[2]["status"] == "rejected"


def test_approve_with_change_accepted_by_the_requester(client, moderated):
    start = local(3, 10)
    req = request_slot(client, moderated["carol"], "p-pool", start)
    manager, carol = moderated["manager"].headers, moderated["carol"].headers
    body = {
        "start": (start + timedelta(hours=2)).isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(),
        "unit": "p-pool-s3",
        "reason": "morning is full",
    }
    p = client.post(f"{Q}/{req['id']}/propose", json=body, headers=manager)
    assert p.status_code == 201, p.text
    pid = p.json()["id"]
    assert client.get(f"{Q}/{req['id']}", headers=manager).json()["open_proposal"]["id"] == pid
    # Only the requester answers; to others the proposal does not exist.
    assert client.post(f"{Q}/proposals/{pid}/accept", headers=moderated["alice"].headers).status_code == 404
    r = client.post(f"{Q}/proposals/{pid}/accept", headers=carol)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "confirmed" and out["unit"] == "p-pool-s3"
    assert out["local_start"] == (start + timedelta(hours=2)).isoformat()
    assert client.post(f"{Q}/proposals/{pid}/accept", headers=carol).json()["code"] == "proposal_closed"


def test_declined_proposal_leaves_the_request_pending_and_a_stale_one_is_refused(client, moderated):
    start = local(3, 10)
    req = request_slot(client, moderated["carol"], "p-court", start)
    manager, carol = moderated["manager"].headers, moderated["carol"].headers
    body = {"start": local(4, 10).isoformat(), "end": local(4, 11).isoformat(), "reason": "other day"}
    pid = client.post(f"{Q}/{req['id']}/propose", json=body, headers=manager).json()["id"]
    r = client.post(f"{Q}/proposals/{pid}/decline", headers=carol)
    assert r.status_code == 200 and r.json()["status"] == "declined"
    assert client.get(f"/api/v1/reservations/{req['id']}", headers=carol).json()["status"] == "pending"
    pid2 = client.post(f"{Q}/{req['id']}/propose", json=body, headers=manager).json()["id"]
    client.post(
        f"/api/v1/reservations/{req['id']}/reschedule",
        json={"start": local(3, 14).isoformat(), "end": local(3, 15).isoformat()},
        headers=carol,
    )
    r = client.post(f"{Q}/proposals/{pid2}/accept", headers=carol)
    assert r.status_code == 409 and r.json()["code"] == "changed_meanwhile"


def _race(engine, people, rid, actions):
    """Run the decisions at once, each in its own write session; return the outcomes."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(who, action):
        principal = principal_of(engine, people[who])
        barrier.wait()
        try:
            with write_session(engine) as s:  # the unit of work a request gets
                if action == "approve":
                    service.approve(s, principal, rid, service.Decision())
                else:
                    service.reject(s, principal, rid, service.Rejection(reason=f"no from {who}"))
            result = "ok"
        except AppError as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=a) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


@pytest.mark.parametrize("actions", [["approve", "reject"], ["approve", "approve"], ["reject", "reject"]])
def test_concurrent_decisions_exactly_one_wins(client, moderated, engine, make_user, actions):
    second, _ = make_user({"role": "venue_manager", "venue": "p-sports"})
    people = {**moderated, "second": type(moderated["manager"])(second.id, second.email, {})}
    req = request_slot(client, moderated["carol"], "p-court", local(3, 10))
    outcomes = _race(engine, people, req["id"], list(zip(["manager", "second"], actions, strict=True)))
    assert sorted(outcomes) == ["already_decided", "ok"]
    with read_session(engine) as s:
        row = s.get(Reservation, req["id"])
        decisions = [
            e
            for e in s.exec(select(AuditEntry).where(AuditEntry.object_id == str(req["id"]))).all()
            if e.action.startswith("moderation.")
        ]
    assert len(decisions) == 1
    assert row.status == (
        "confirmed" if json.loads(decisions[0].summary)["after"]["status"] == "confirmed" else "rejected"
    )
