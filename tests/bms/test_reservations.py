from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import func, select

from bms.models import Reservation
from core.db import read_session, write_session
from core.outbox import OutboxMessage
from tests.bms.conftest import book, local


def test_booking_is_confirmed_with_its_access_window(client, people, engine):
    start = local(3, 18)
    r = book(client, people["alice"], "p-court", start, start + timedelta(hours=1), beneficiaries=[people["bob"].id])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "confirmed" and body["unit"] == "p-court"
    assert body["local_start"] == start.isoformat()
    assert datetime.fromisoformat(body["access_start"]) == start - timedelta(minutes=10)
    assert datetime.fromisoformat(body["access_end"]) == start + timedelta(hours=1, minutes=5)
    assert body["beneficiaries"] == [people["bob"].id]
    with read_session(engine) as s:
        kinds = s.exec(select(OutboxMessage.kind)).all()
    assert kinds == ["reservation.confirmed"]


def test_double_booking_is_409_without_identity(client, people):
    start = local(3, 10)
    assert book(client, people["alice"], "p-court", start, start + timedelta(hours=2)).status_code == 201
    r = book(client, people["carol"], "p-court", start + timedelta(hours=1), start + timedelta(hours=3))
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "slot_taken"
    assert body["conflicting_window"] == {
        "start": start.astimezone(UTC).isoformat(),
        "end": (start + timedelta(hours=2)).astimezone(UTC).isoformat(),
    }
    assert "planner" not in r.text and people["alice"].email not in r.text
    # Back to back is fine.
    assert (
        book(client, people["carol"], "p-court", start + timedelta(hours=2), start + timedelta(hours=3)).status_code
        == 201
    )


def test_buffer_keeps_time_between_bookings(client, people):
    start = local(4, 10)
    assert book(client, people["alice"], "p-court-b", start, start + timedelta(hours=1)).status_code == 201
    r = book(client, people["carol"], "p-court-b", start + timedelta(hours=1), start + timedelta(hours=2))
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"
    r = book(client, people["carol"], "p-court-b", start - timedelta(hours=1), start)
    assert r.status_code == 409  # its own buffer would run into the next booking
    assert (
        book(
            client, people["carol"], "p-court-b", start + timedelta(minutes=90), start + timedelta(minutes=150)
        ).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("shift", "code", "status"),
    [
        (lambda s: {"start": s.isoformat(), "end": (s - timedelta(hours=1)).isoformat()}, "invalid_range", 422),
        (
            lambda s: {"start": (s + timedelta(minutes=10)).isoformat(), "end": (s + timedelta(hours=1)).isoformat()},
            "off_grid",
            422,
        ),
        (lambda s: {"start": s.isoformat(), "end": (s + timedelta(hours=25)).isoformat()}, "too_long", 422),
        (
            lambda s: {
                "start": (s - timedelta(days=10)).isoformat(),
                "end": (s - timedelta(days=10, hours=-1)).isoformat(),
            },
            "in_the_past",
            422,
        ),
        (
            lambda s: {
                "start": (s + timedelta(days=500)).isoformat(),
                "end": (s + timedelta(days=500, hours=1)).isoformat(),
            },
            "too_far_ahead",
            422,
        ),
        (
            lambda s: {"start": s.replace(tzinfo=None).isoformat(), "end": (s + timedelta(hours=1)).isoformat()},
            "validation_error",
            422,
        ),
        (lambda s: {"resource": "nowhere"}, "resource_not_found", 404),
        (lambda s: {"beneficiaries": [987654]}, "unknown_beneficiary", 422),
        (lambda s: {"beneficiaries": [1, 2, 3, 4]}, "too_many_beneficiaries", 422),
        (lambda s: {"places": 2}, "too_many_places", 422),
        (lambda s: {"colour": "red"}, "validation_error", 422),
    ],
)
def test_bad_requests_are_refused_and_nothing_written(client, people, engine, shift, code, status):
    s = local(5, 9)
    body = {"resource": "p-court", "start": s.isoformat(), "end": (s + timedelta(hours=1)).isoformat(), **shift(s)}
    r = client.post("/api/v1/reservations", json=body, headers=people["alice"].headers)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    with read_session(engine) as sess:
        assert sess.exec(select(func.count()).select_from(Reservation)).one() == 0
        assert sess.exec(select(func.count()).select_from(OutboxMessage)).one() == 0


def test_naive_time_error_names_the_field(client, people):
    s = local(5, 9)
    body = {
        "resource": "p-court",
        "start": s.replace(tzinfo=None).isoformat(),
        "end": (s + timedelta(hours=1)).isoformat(),
    }
    err = client.post("/api/v1/reservations", json=body, headers=people["alice"].headers).json()["errors"][0]
    assert err["field"] == "start" and err["code"] == "timezone_aware"


def test_opening_hours_in_local_time(client, people):
    monday = local(0, 0)
    monday += timedelta(days=(7 - monday.weekday()) % 7 or 7)
    ok = book(client, people["alice"], "p-club", monday.replace(hour=8), monday.replace(hour=12))
    assert ok.status_code == 201, ok.text
    lunch = book(client, people["alice"], "p-club", monday.replace(hour=11), monday.replace(hour=15))
    assert lunch.status_code == 422 and lunch.json()["code"] == "outside_opening_hours"
    tuesday = monday + timedelta(days=1)
    r = book(client, people["alice"], "p-club", tuesday.replace(hour=9), tuesday.replace(hour=10))
    assert r.status_code == 422 and r.json()["code"] == "outside_opening_hours"


def test_capacity_counts_places(client, people):
    s = local(6, 18)
    e = s + timedelta(hours=1)
    assert book(client, people["alice"], "p-class", s, e, places=10).status_code == 201
    r = book(client, people["carol"], "p-class", s, e, places=3)
    assert r.status_code == 409 and r.json()["code"] == "slot_taken" and r.json()["places_left"] == 2
    assert book(client, people["carol"], "p-class", s, e, places=2).status_code == 201
    # An overlapping later slot only counts the places in use at the same instants.
    assert book(client, people["carol"], "p-class", e, e + timedelta(hours=1), places=12).status_code == 201


def test_pool_assigns_units_fast_filling_and_balancing(client, people):
    s = local(7, 9)
    e = s + timedelta(hours=1)
    units = [book(client, people["carol"], "p-pool", s, e).json()["unit"] for _ in range(5)]
    assert units == [f"p-pool-s{i}" for i in range(1, 6)]
    assert book(client, people["carol"], "p-pool", s, e).json()["code"] == "slot_taken"
    # A later slot fills the first unit again (fast filling packs into the first free unit).
    assert book(client, people["carol"], "p-pool", e, e + timedelta(hours=1)).json()["unit"] == "p-pool-s1"
    # Balancing spreads: each new booking goes to the least used unit.
    bal = [
        book(client, people["carol"], "p-bal", s + timedelta(hours=i), e + timedelta(hours=i)).json()["unit"]
        for i in range(6)
    ]
    assert sorted(bal) == ["p-bal-1", "p-bal-1", "p-bal-2", "p-bal-2", "p-bal-3", "p-bal-3"]


def test_self_service_off_is_managers_only(client, people):
    s = local(3, 9)
    r = book(client, people["alice"], "p-managed", s, s + timedelta(hours=1))
    assert r.status_code == 403 and r.json()["code"] == "self_service_disabled"
    assert book(client, people["manager"], "p-managed", s, s + timedelta(hours=1)).status_code == 201


def test_resident_of_another_site_cannot_book_or_see(client, people):
    s = local(3, 9)
    r = book(client, people["ny"], "p-court", s, s + timedelta(hours=1))
    assert r.status_code == 404 or r.json()["code"] == "not_a_resident"
    assert client.get("/api/v1/resources/p-court", headers=people["ny"].headers).status_code == 404


def test_cancel_and_reschedule(client, people, engine):
    s = local(8, 10)
    rid = book(client, people["alice"], "p-court", s, s + timedelta(hours=1)).json()["id"]
    r = client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        headers=people["alice"].headers,
        json={"start": (s + timedelta(hours=2)).isoformat(), "end": (s + timedelta(hours=3)).isoformat()},
    )
    assert r.status_code == 200 and r.json()["changes"] == 1
    assert datetime.fromisoformat(r.json()["access_start"]) == s + timedelta(hours=2) - timedelta(minutes=10)
    # The old slot is free again.
    assert book(client, people["carol"], "p-court", s, s + timedelta(hours=1)).status_code == 201
    r = client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        headers=people["alice"].headers,
        json={"start": s.isoformat(), "end": (s + timedelta(hours=1)).isoformat()},
    )
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"
    client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        headers=people["alice"].headers,
        json={"start": (s + timedelta(hours=4)).isoformat(), "end": (s + timedelta(hours=5)).isoformat()},
    )
    r = client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        headers=people["alice"].headers,
        json={"start": (s + timedelta(hours=6)).isoformat(), "end": (s + timedelta(hours=7)).isoformat()},
    )
    assert r.status_code == 409 and r.json()["code"] == "too_many_changes"
    r = client.post(f"/api/v1/reservations/{rid}/cancel", json={"reason": "rain"}, headers=people["alice"].headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["status_reason"] == "rain"
    r = client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"


def test_change_deadline_binds_residents_not_managers(client, people, engine):
    s = local(2, 10)
    rid = book(client, people["alice"], "p-court", s, s + timedelta(hours=1)).json()["id"]
    with write_session(engine) as sess:  # the booking is now 30 minutes away
        r = sess.get(Reservation, rid)
        from core.db import utcnow

        r.start = utcnow() + timedelta(minutes=30)
        r.end = r.start + timedelta(hours=1)
        sess.add(r)
    resp = client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    assert resp.status_code == 409 and resp.json()["code"] == "change_deadline_passed"
    resp = client.post(
        f"/api/v1/reservations/{rid}/cancel", json={"reason": "court repair"}, headers=people["manager"].headers
    )
    assert resp.status_code == 200


def test_object_level_access(client, people):
    s = local(9, 10)
    rid = book(client, people["alice"], "p-court", s, s + timedelta(hours=1), beneficiaries=[people["bob"].id]).json()[
        "id"
    ]
    assert client.get(f"/api/v1/reservations/{rid}", headers=people["carol"].headers).status_code == 404
    assert (
        client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["carol"].headers).status_code == 404
    )
    assert client.get(f"/api/v1/reservations/{rid}", headers=people["bob"].headers).status_code == 200
    r = client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["bob"].headers)
    assert r.status_code == 403 and r.json()["code"] == "not_the_planner"
    assert client.get(f"/api/v1/reservations/{rid}", headers=people["other_manager"].headers).status_code == 404
    assert client.get(f"/api/v1/reservations/{rid}", headers=people["manager"].headers).status_code == 200
    mine = client.get("/api/v1/reservations", headers=people["bob"].headers).json()
    assert [x["id"] for x in mine] == [rid]
    assert client.get("/api/v1/reservations", headers=people["carol"].headers).json() == []
    managed = client.get("/api/v1/reservations", params={"scope": "managed"}, headers=people["manager"].headers)
    assert [x["id"] for x in managed.json()] == [rid]
    r = client.get("/api/v1/reservations", params={"scope": "managed"}, headers=people["carol"].headers)
    assert r.status_code == 403
    r = client.get("/api/v1/reservations", params={"status": "bogus"}, headers=people["carol"].headers)
    assert r.status_code == 422


def test_idempotency_key_replays_the_first_answer(client, people, engine):
    s = local(10, 10)
    headers = {**people["alice"].headers, "Idempotency-Key": "k-123"}
    body = {"resource": "p-court", "start": s.isoformat(), "end": (s + timedelta(hours=1)).isoformat()}
    first = client.post("/api/v1/reservations", json=body, headers=headers)
    again = client.post("/api/v1/reservations", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers.get("Idempotent-Replayed") == "true"
    other = client.post("/api/v1/reservations", json={**body, "note": "x"}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    with read_session(engine) as sess:
        assert sess.exec(select(func.count()).select_from(Reservation)).one() == 1
    # Keys are per user: Carol's same key is her own.
    carol = client.post(
        "/api/v1/reservations",
        json={**body, "resource": "p-court-b"},
        headers={**people["carol"].headers, "Idempotency-Key": "k-123"},
    )
    assert carol.status_code == 201


def test_time_budget_per_household(client, people):
    s = local(11, 8)
    assert book(client, people["alice"], "p-court", s, s + timedelta(hours=2)).status_code == 201
    assert (
        book(client, people["bob"], "p-court-b", s + timedelta(days=1), s + timedelta(days=1, hours=2)).status_code
        == 201
    )
    r = book(client, people["alice"], "p-court", s + timedelta(days=2), s + timedelta(days=2, hours=1))
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "quota_exceeded" and body["quota"] == "budget:courts"
    assert body["limit_minutes"] == 240 and body["used_minutes"] == 240 and body["window_days"] == 7
    # Another household has its own budget; a week later the window has moved on.
    assert (
        book(client, people["carol"], "p-court", s + timedelta(days=2), s + timedelta(days=2, hours=1)).status_code
        == 201
    )
    assert (
        book(
            client, people["alice"], "p-court", s + timedelta(days=8, hours=2), s + timedelta(days=8, hours=3)
        ).status_code
        == 201
    )
    # Resources outside the group do not count.
    assert book(client, people["alice"], "p-class", s, s + timedelta(hours=3)).status_code == 201


def test_max_active_reservations_default_500(client, people, engine):
    s = local(20, 0)
    with write_session(engine) as sess:
        from bms.models import Resource, ResourceUnit

        res = sess.exec(select(Resource).where(Resource.key == "p-class")).one()
        unit = sess.exec(select(ResourceUnit).where(ResourceUnit.resource_id == res.id)).one()
        for i in range(500):
            a = s + timedelta(minutes=30 * i)
            sess.add(
                Reservation(
                    resource_id=res.id,
                    unit_id=unit.id,
                    planner_id=people["carol"].id,
                    start=a,
                    end=a + timedelta(minutes=30),
                    block_start=a,
                    block_end=a + timedelta(minutes=30),
                    access_start=a,
                    access_end=a,
                    exclusive=False,
                    places=1,
                    status="confirmed",
                )
            )
    r = book(client, people["carol"], "p-class", local(3, 9), local(3, 10))
    assert r.status_code == 409
    assert r.json() | {"message": ""} == {
        "code": "quota_exceeded",
        "message": "",
        "quota": "max_active_reservations",
        "limit": 500,
        "used": 500,
    }
    assert book(client, people["alice"], "p-class", local(3, 9), local(3, 10)).status_code == 201


def test_manager_edits_rules_over_the_api(client, people):
    r = client.patch(
        "/api/v1/resources/p-court/rules",
        json={"max_active_per_user": 1, "buffer_minutes": 30},
        headers=people["manager"].headers,
    )
    assert r.status_code == 200 and r.json()["rules"]["max_active_per_user"] == 1
    assert (
        client.patch(
            "/api/v1/resources/p-court/rules", json={"max_minutes": 60}, headers=people["alice"].headers
        ).status_code
        == 403
    )
    assert (
        client.patch(
            "/api/v1/resources/p-court/rules", json={"max_minutes": 60}, headers=people["other_manager"].headers
        ).status_code
        == 404
    )
    assert (
        client.patch(
            "/api/v1/resources/p-court/rules", json={"slot_minutes": 1}, headers=people["manager"].headers
        ).status_code
        == 422
    )
    s = local(12, 9)
    assert book(client, people["alice"], "p-court", s, s + timedelta(hours=1)).status_code == 201
    r = book(client, people["alice"], "p-court", s + timedelta(hours=3), s + timedelta(hours=4))
    assert r.status_code == 409 and r.json()["quota"] == "max_active_reservations"


def test_duplicate_to_dates_and_resources(client, people):
    s = local(13, 17)
    rid = book(client, people["alice"], "p-class", s, s + timedelta(hours=1)).json()["id"]
    book(client, people["carol"], "p-class", s + timedelta(days=7), s + timedelta(days=7, hours=1), places=12)
    d1, d2 = (s + timedelta(days=1)).date().isoformat(), (s + timedelta(days=7)).date().isoformat()
    r = client.post(
        f"/api/v1/reservations/{rid}/duplicate",
        json={"dates": [d1, d2], "resources": ["p-class", "p-club"]},
        headers=people["alice"].headers,
    )
    assert r.status_code == 200, r.text
    made = {(m["resource"], m["date"]) for m in r.json()["made"]}
    refused = {(m["resource"], m["date"], m["code"]) for m in r.json()["refused"]}
    assert ("p-class", d1) in made
    assert ("p-class", d2, "slot_taken") in refused
    assert all(
        m["reservation"]["local_start"].endswith("T17:00:00+01:00")
        or m["reservation"]["local_start"].endswith("T17:00:00+02:00")
        for m in r.json()["made"]
    )
    assert any(x[0] == "p-club" and x[2] == "outside_opening_hours" for x in refused) or any(
        m[0] == "p-club" for m in made
    )


def test_minimum_notice_binds_residents_not_managers(client, people):
    r = client.patch(
        "/api/v1/resources/p-hall/rules", json={"notice_min_minutes": 2880}, headers=people["manager"].headers
    )
    assert r.status_code == 200
    soon = local(1, 12)
    r = book(client, people["alice"], "p-hall", soon, soon + timedelta(hours=1))
    assert r.status_code == 422 and r.json()["code"] == "too_late_to_book"
    assert book(client, people["alice"], "p-hall", local(3, 12), local(3, 13)).status_code == 201
    assert book(client, people["manager"], "p-hall", soon, soon + timedelta(hours=1)).status_code == 201
