"""My profile: my credentials (PINs masked), and a password change that signs out every other
session and keeps this browser signed in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

HTML = {"Accept": "text/html", "Accept-Language": "en"}

pytestmark = pytest.mark.usefixtures("example_site")


def test_my_credentials_are_listed_with_pins_masked(client, make_user, admin_headers):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"})
    for body in ({"kind": "badge", "value": "04:A1:B2:C3", "label": "blue fob"}, {"kind": "pin", "value": "482915"}):
        assert client.post(f"/api/v1/users/{user.id}/credentials", json=body, headers=admin_headers).status_code == 201
    client.post("/login", data={"email": user.email, "password": password})
    page = client.get("/profile", headers=HTML)
    assert page.status_code == 200
    assert "Badge" in page.text and "blue fob" in page.text and "04A1B2C3" in page.text.replace(":", "").upper()
    assert "482915" not in page.text and "****" in page.text
    assert "Ausweis" in client.get("/profile", headers={**HTML, "Accept-Language": "de"}).text


def test_password_change(app, client, make_user):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"})
    with TestClient(app) as other:  # another browser, signed in too
        other.post("/login", data={"email": user.email, "password": password})
        assert other.get("/profile", follow_redirects=False).status_code == 200
        client.post("/login", data={"email": user.email, "password": password})
        wrong = client.post(
            "/profile/password", data={"current_password": "not-it-at-all", "new_password": "x"}, headers=HTML
        )
        assert wrong.status_code == 422 and 'id="new_password-error"' in wrong.text  # the new one is checked first
        weak = client.post(
            "/profile/password",
            data={"current_password": password, "new_password": "aaaaaaaaaaaa"},
            headers={**HTML, "Accept-Language": "fr"},
        )
        assert weak.status_code == 422 and "trop facile à deviner" in weak.text
        bad = client.post(
            "/profile/password", data={"current_password": "not-it-at-all", "new_password": "a quiet blue harbour"}
        )
        assert bad.status_code == 401 and 'id="current_password-error"' in bad.text
        done = client.post(
            "/profile/password",
            data={"current_password": password, "new_password": "a quiet blue harbour"},
            follow_redirects=False,
        )
        assert done.status_code == 303 and done.headers["location"] == "/profile?done=password"
        assert client.get("/profile", headers=HTML).status_code == 200  # this browser stays signed in
        assert other.get("/profile", follow_redirects=False).status_code == 303  # the other one is out
        again = {"email": user.email, "password": "a quiet blue harbour"}
        assert client.post("/login", data=again, follow_redirects=False).status_code == 303


def test_a_resident_chooses_the_digits_of_their_pin(client, engine, make_user, admin_headers):
    """Reception issues the PIN; its owner changes the digits (API and profile page); the online
    decisions follow at once; nobody else can touch it; bad digits are refused in words."""
    from sqlmodel import select

    from access.events import credential_for
    from core.audit import AuditEntry
    from core.db import read_session
    from tests.conftest import login

    alice, apw = make_user({"role": "resident", "site": "les-tilleuls"})
    bob, bpw = make_user({"role": "resident", "site": "les-tilleuls"})
    pin = client.post(
        f"/api/v1/users/{alice.id}/credentials", json={"kind": "pin", "value": "482915"}, headers=admin_headers
    )
    badge = client.post(
        f"/api/v1/users/{alice.id}/credentials", json={"kind": "badge", "value": "04a1b2c3"}, headers=admin_headers
    )
    pid, bid = pin.json()["id"], badge.json()["id"]

    mine = login(client, alice.email, apw)
    r = client.put(f"/api/v1/me/credentials/{pid}/pin", json={"pin": "7351"}, headers=mine)
    assert r.status_code == 200 and r.json()["value"] == "****"
    with read_session(engine) as s:
        assert credential_for(s, "pin", "7351").id == pid and credential_for(s, "pin", "482915") is None
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "credential.pin_change")).one()
    assert client.put(f"/api/v1/me/credentials/{pid}/pin", json={"pin": "12a4"}, headers=mine).status_code == 422
    assert client.put(f"/api/v1/me/credentials/{bid}/pin", json={"pin": "1234"}, headers=mine).status_code == 404
    theirs = login(client, bob.email, bpw)
    assert client.put(f"/api/v1/me/credentials/{pid}/pin", json={"pin": "1234"}, headers=theirs).status_code == 404

    client.post("/login", data={"email": alice.email, "password": apw})
    page = client.get("/profile", headers=HTML)
    assert f'action="/profile/pin/{pid}"' in page.text and f'action="/profile/pin/{bid}"' not in page.text
    bad = client.post(f"/profile/pin/{pid}", data={"pin": "12"}, headers=HTML)
    assert bad.status_code == 422 and f'id="pin-{pid}-error"' in bad.text and "4 to 8 digits" in bad.text
    done = client.post(f"/profile/pin/{pid}", data={"pin": "90210"}, headers=HTML, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/profile?done=pin"
    with read_session(engine) as s:
        assert credential_for(s, "pin", "90210").id == pid

    client.delete(f"/api/v1/users/{alice.id}/credentials/{pid}", headers=admin_headers)
    assert client.put(f"/api/v1/me/credentials/{pid}/pin", json={"pin": "1111"}, headers=mine).status_code == 409
