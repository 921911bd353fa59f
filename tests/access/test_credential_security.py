"""Who issues credentials, and PINs and BLE keys kept encrypted at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from access.models import Credential, lookup_token, plain_value
from core.db import read_session
from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")


@pytest.fixture
def people(client, make_user):
    def person(*roles):
        user, pw = make_user(*roles)
        return user.id, login(client, user.email, pw)

    return {
        "admin": person({"role": "admin"}),
        "alice": person({"role": "resident", "site": "les-tilleuls"}),
        "bob": person({"role": "resident", "site": "les-tilleuls"}),
        "sports": person({"role": "venue_manager", "venue": "sports"}),
        "reception": person({"role": "reception", "site": "les-tilleuls"}),
        "nobody": person(),
    }


def _add(client, user_id, headers, value="0badcafe"):
    return client.post(f"/api/v1/users/{user_id}/credentials", json={"kind": "badge", "value": value}, headers=headers)


def test_venue_managers_issue_no_credentials(client, people):
    alice_id = people["alice"][0]
    r = _add(client, alice_id, people["sports"][1])
    assert (r.status_code, r.json()["code"]) == (404, "user_not_found")
    ok = _add(client, alice_id, people["reception"][1])
    assert ok.status_code == 201
    gone = client.delete(f"/api/v1/users/{alice_id}/credentials/{ok.json()['id']}", headers=people["sports"][1])
    assert gone.status_code == 404
    assert client.get(f"/api/v1/users/{alice_id}/credentials", headers=people["sports"][1]).status_code == 404


def test_reception_only_for_residents_of_its_site(client, people):
    # staff are not residents: the front desk issues nothing to them
    assert _add(client, people["sports"][0], people["reception"][1]).status_code == 404
    assert _add(client, people["sports"][0], people["admin"][1]).status_code == 201


@pytest.mark.parametrize("who", ["alice", "sports", "nobody", "reception"])
def test_no_such_user_and_not_yours_look_the_same(client, people, who):
    headers = people[who][1]
    target = people["bob"][0] if who != "reception" else people["admin"][0]
    missing = _add(client, 999_999, headers)
    theirs = _add(client, target, headers)
    assert missing.status_code == theirs.status_code == 404
    assert missing.json() == {**theirs.json(), "message": missing.json()["message"]}
    assert missing.json()["message"].replace("999999", "X") == theirs.json()["message"].replace(str(target), "X")


def test_pins_and_ble_keys_are_encrypted_at_rest(client, people, engine):
    alice_id, _ = people["alice"]
    admin = people["admin"][1]
    pin = client.post(f"/api/v1/users/{alice_id}/credentials", json={"kind": "pin", "value": "73915"}, headers=admin)
    ble = client.post(
        f"/api/v1/users/{alice_id}/credentials", json={"kind": "ble", "value": "key-9c1e77"}, headers=admin
    )
    assert pin.status_code == ble.status_code == 201
    assert pin.json()["value"] == ble.json()["value"] == "****"
    with read_session(engine) as s:
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM credential")).all() for v in row)
        assert "73915" not in dump and "key-9c1e77" not in dump
        stored = s.get(Credential, pin.json()["id"])
        assert stored is not None and stored.value == lookup_token("pin", "73915") and stored.secret
        assert plain_value(stored) == "73915"
        ble_row = s.get(Credential, ble.json()["id"])
        assert ble_row is not None and plain_value(ble_row) == "key-9c1e77"
    # uniqueness still holds on the keyed hash
    dup = client.post(
        f"/api/v1/users/{people['bob'][0]}/credentials", json={"kind": "pin", "value": "73915"}, headers=admin
    )
    assert dup.status_code == 409 and dup.json()["code"] == "credential_taken"
    # and so does lookup by a presented value (online decisions compare the keyed hash)
    r = client.post(
        "/api/v1/access/decisions", json={"door": "meeting-room-door", "kind": "pin", "value": "73915"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["reason"] != "unknown_credential"
