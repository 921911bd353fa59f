"""Doors, credentials and the grants that bookings produce, through the API on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.bms.conftest import local
from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")


@pytest.fixture
def folks(client, make_user):
    def person(*roles, name="P"):
        user, pw = make_user(*roles, name=name)
        return user.id, login(client, user.email, pw)

    return {
        "admin": person({"role": "admin"}),
        "alice": person({"role": "resident", "site": "les-tilleuls"}, name="Alice"),
        "bob": person({"role": "resident", "site": "les-tilleuls"}, name="Bob"),
        "sports": person({"role": "venue_manager", "venue": "sports"}),
        "reception": person({"role": "reception", "site": "les-tilleuls"}),
    }


def test_credentials_are_managed_by_admins_and_reception(client, folks):
    alice_id, alice = folks["alice"]
    r = client.post(
        f"/api/v1/users/{alice_id}/credentials",
        json={"kind": "badge", "value": "04a1b2c3"},
        headers=folks["reception"][1],
    )
    assert r.status_code == 201 and r.json()["value"] == "04a1b2c3" and r.json()["format"] == "uid"
    pin = client.post(
        f"/api/v1/users/{alice_id}/credentials", json={"kind": "pin", "value": "4321"}, headers=folks["admin"][1]
    )
    assert pin.json()["value"] == "****"
    dup = client.post(
        f"/api/v1/users/{folks['bob'][0]}/credentials",
        json={"kind": "badge", "value": "04A1B2C3"},
        headers=folks["admin"][1],
    )
    assert dup.status_code == 409 and dup.json()["code"] == "credential_taken"
    bad = client.post(
        f"/api/v1/users/{alice_id}/credentials", json={"kind": "badge", "value": "not hex!"}, headers=folks["admin"][1]
    )
    assert bad.status_code == 422
    assert (
        client.post(
            f"/api/v1/users/{alice_id}/credentials", json={"kind": "badge", "value": "aabbccdd"}, headers=alice
        ).json()["code"]
        == "user_not_found"
    )
    assert client.get(f"/api/v1/users/{alice_id}/credentials", headers=folks["sports"][1]).status_code == 404
    listed = client.get(f"/api/v1/users/{alice_id}/credentials", headers=folks["reception"][1]).json()
    assert [c["kind"] for c in listed] == ["badge", "pin"]
    gone = client.delete(f"/api/v1/users/{alice_id}/credentials/{r.json()['id']}", headers=folks["admin"][1])
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    again = client.delete(f"/api/v1/users/{alice_id}/credentials/{r.json()['id']}", headers=folks["admin"][1])
    assert again.status_code == 409


def test_doors_are_scoped(client, folks):
    all_doors = {d["key"] for d in client.get("/api/v1/doors", headers=folks["admin"][1]).json()}
    assert all_doors == {
        "lobby-door",
        "court-gate",
        "meeting-room-door",
        "party-room-door",
        "garage-gate",
        "key-cabinet",
        "garage-door",
    }
    sports = {d["key"] for d in client.get("/api/v1/doors", headers=folks["sports"][1]).json()}
    assert sports == {"court-gate"}
    assert client.get("/api/v1/doors/garage-gate", headers=folks["sports"][1]).status_code == 404
    assert client.get("/api/v1/doors", headers=folks["alice"][1]).json() == []
    assert len(client.get("/api/v1/doors", headers=folks["reception"][1]).json()) == 7


def test_a_booking_grants_its_beneficiaries_on_its_doors_until_cancelled(client, folks):
    alice_id, alice = folks["alice"]
    bob_id, _ = folks["bob"]
    admin = folks["admin"][1]
    badge = client.post(
        f"/api/v1/users/{bob_id}/credentials", json={"kind": "badge", "value": "b0b0b0b0"}, headers=admin
    ).json()
    client.post(f"/api/v1/users/{alice_id}/credentials", json={"kind": "badge", "value": "a11cea11"}, headers=admin)
    start = local(3, 18)
    made = client.post(
        "/api/v1/reservations",
        headers=alice,
        json={
            "resource": "court-1",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "beneficiaries": [bob_id],
        },
    )
    assert made.status_code == 201, made.text
    grants = client.get("/api/v1/doors/court-gate/grants", headers=admin).json()["grants"]
    # Bob, the beneficiary, gets the court gate from 10 minutes before to 5 minutes after; Alice booked for him.
    assert [(g["credential_id"], g["user_id"]) for g in grants] == [(badge["id"], bob_id)]
    assert datetime.fromisoformat(grants[0]["valid_from"]) == start - timedelta(minutes=10)
    assert datetime.fromisoformat(grants[0]["valid_until"]) == start + timedelta(hours=1, minutes=5)
    assert grants[0]["sources"] == [f"reservation:{made.json()['id']}"] and grants[0]["modes"] == ["badge"]
    # Rescheduling moves the grant; cancelling removes it.
    later = start + timedelta(hours=2)
    client.post(
        f"/api/v1/reservations/{made.json()['id']}/reschedule",
        headers=alice,
        json={"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()},
    )
    grants = client.get("/api/v1/doors/court-gate/grants", headers=admin).json()["grants"]
    assert datetime.fromisoformat(grants[0]["valid_from"]) == later - timedelta(minutes=10)
    client.post(f"/api/v1/reservations/{made.json()['id']}/cancel", headers=alice, json={"reason": "rain"})
    assert client.get("/api/v1/doors/court-gate/grants", headers=admin).json()["grants"] == []


def test_meeting_room_is_online_decided_and_reaches_the_shared_entrance(client, folks):
    alice_id, alice = folks["alice"]
    admin = folks["admin"][1]
    client.post(f"/api/v1/users/{alice_id}/credentials", json={"kind": "ble", "value": "key-7f3a"}, headers=admin)
    start = local(4, 9)
    r = client.post(
        "/api/v1/reservations",
        headers=alice,
        json={"resource": "meeting-room", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    )
    assert r.status_code == 201, r.text
    room = client.get("/api/v1/doors/meeting-room-door/grants", headers=admin).json()["grants"]
    lobby = client.get("/api/v1/doors/lobby-door/grants", headers=admin).json()["grants"]
    assert room[0]["modes"] == ["authorized"] and room[0]["user_id"] == alice_id
    assert lobby[0]["user_id"] == alice_id


def test_badges_are_stored_canonically_with_their_format(client, folks):
    alice_id, _ = folks["alice"]
    admin = folks["admin"][1]

    def add(body):
        return client.post(f"/api/v1/users/{alice_id}/credentials", json={"kind": "badge", **body}, headers=admin)

    r = add({"value": "04:0A:1B:2C"})
    assert r.status_code == 201 and (r.json()["format"], r.json()["value"]) == ("uid", "040a1b2c")
    printed = add({"value": "4a1b2c"})  # what an MFRC522 prints for 04 0a 1b 2c: bytes lost their zeros
    assert printed.status_code == 422 and "4, 7 or 10 bytes, not 3" in printed.text
    odd = add({"value": "40a1b2c"})
    assert odd.status_code == 422 and "two hex digits per byte" in odd.text
    five = add({"value": "0a1b2c3d4e"})
    assert five.status_code == 422 and "em4100" in five.text
    assert add({"format": "em4100", "value": "0A1B2C3D4E"}).json()["value"] == "0a1b2c3d4e"
    assert add({"format": "wiegand", "value": "0001234567"}).json()["value"] == "1234567"
    assert add({"format": "wiegand", "value": "12ab"}).status_code == 422
    # the same digits as a Wiegand number and as a card serial are two different cards
    assert add({"format": "wiegand", "value": "12345678"}).status_code == 201
    assert add({"value": "12345678"}).status_code == 201
    # 01 23 45 67 and 12 34 56 07 both read "1234567" on readers that drop leading zeros: refused
    assert add({"value": "01234567"}).status_code == 201
    twin = add({"value": "12345607"})
    assert twin.status_code == 409 and twin.json()["code"] == "credential_ambiguous"
    pin = client.post(
        f"/api/v1/users/{alice_id}/credentials", json={"kind": "pin", "value": "1234", "format": "uid"}, headers=admin
    )
    assert pin.status_code == 422
