"""An open waitlist offer holds its place: a direct booking by anyone else that needs it is refused
with `held_for_waitlist` and availability shows it taken; the candidate books it; once the offer
closes the place is free again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.bms.conftest import book, local


@pytest.fixture
def offered(client, people):
    """p-class (12 places) full at day 6, 18:00-19:00; carol waits; alice frees 2 places: carol's
    offer (2 places) holds them. Returns (start, end, carol's entry id)."""
    start = local(6, 18)
    end = start + timedelta(hours=1)
    r = book(client, people["alice"], "p-class", start, end, places=10)
    assert r.status_code == 201, r.text
    freed = book(client, people["alice"], "p-class", start, end, places=2).json()["id"]
    body = {"resource": "p-class", "start": start.isoformat(), "end": end.isoformat(), "places": 2}
    entry = client.post("/api/v1/waitlist", json=body, headers=people["carol"].headers)
    assert entry.status_code == 201, entry.text
    cancelled = client.post(f"/api/v1/reservations/{freed}/cancel", json={}, headers=people["alice"].headers)
    assert cancelled.status_code == 200
    return start, end, entry.json()["id"]


def test_a_held_place_is_refused_to_others_and_booked_by_its_candidate(client, engine, people, offered):
    start, end, entry = offered
    refused = book(client, people["bob"], "p-class", start, end)
    assert refused.status_code == 409 and refused.json()["code"] == "held_for_waitlist"
    later = book(client, people["bob"], "p-class", start + timedelta(hours=1), end + timedelta(hours=1))
    assert later.status_code == 201  # only the held window is refused
    slots = client.get(
        "/api/v1/resources/p-class/availability",
        params={"from": start.isoformat(), "to": end.isoformat()},
        headers=people["bob"].headers,
    ).json()["slots"]
    assert slots and all(s["available"] == 0 and s["status"] == "full" for s in slots)  # held: not free to others

    accepted = client.post(f"/api/v1/waitlist/{entry}/accept", headers=people["carol"].headers)
    assert accepted.status_code == 200 and accepted.json()["status"] == "booked"


def test_a_declined_offer_frees_the_place(client, engine, people, offered):
    start, end, entry = offered
    assert client.post(f"/api/v1/waitlist/{entry}/decline", headers=people["carol"].headers).status_code == 200
    slots = client.get(
        "/api/v1/resources/p-class/availability",
        params={"from": start.isoformat(), "to": end.isoformat()},
        headers=people["bob"].headers,
    ).json()["slots"]
    assert slots and all(s["available"] == 2 for s in slots)
    assert book(client, people["bob"], "p-class", start, end, places=2).status_code == 201


def test_a_held_court_is_refused_and_the_candidate_may_book_it_directly(client, engine, people):
    start = local(6, 20)
    end = start + timedelta(hours=1)
    rid = book(client, people["alice"], "p-court-b", start, end).json()["id"]
    body = {"resource": "p-court-b", "start": start.isoformat(), "end": end.isoformat()}
    assert client.post("/api/v1/waitlist", json=body, headers=people["carol"].headers).status_code == 201
    client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    # the buffer counts: bob's booking right after the held hour would eat its 30 minutes
    later = book(client, people["bob"], "p-court-b", end, end + timedelta(hours=1))
    assert later.status_code == 409 and later.json()["code"] == "held_for_waitlist"
    assert book(client, people["carol"], "p-court-b", start, end).status_code == 201
