"""The admins' pages over the real services: users and roles, credentials, site files,
controllers; and nobody else gets in."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from config.site import example_path
from core.audit import AuditEntry
from core.db import read_session
from tests.portal.test_manager_pages import signed_in

pytestmark = pytest.mark.usefixtures("example_site")


@pytest.fixture
def admin(app, make_user) -> TestClient:
    user, password = make_user({"role": "admin"}, name="Ada Admin")
    return signed_in(app, user, password)


def test_only_admins_get_in(app, make_user):
    manager, pw = make_user({"role": "venue_manager", "venue": "sports"})
    c = signed_in(app, manager, pw)
    for path in ("/admin", "/admin/users", "/admin/sites", "/admin/controllers", "/admin/retention", "/admin/users/1"):
        assert c.get(path).status_code == 403, path
    assert c.post("/admin/users", data={"email": "x@example.com", "name": "X"}).status_code == 403
    assert TestClient(app).get("/admin/users", follow_redirects=False).headers["location"] == "/login"


def test_invite_sign_in_with_the_one_time_password_disable_and_reset(app, admin, engine):
    r = admin.post(
        "/admin/users",
        data={"email": "Nina@Example.com", "name": "Nina New", "role": "resident", "scope": "les-tilleuls"},
    )
    assert r.status_code == 201, r.text
    password = re.search(r'id="one-time-password">([^<]+)<', r.text).group(1)
    assert "resident" in r.text and "les-tilleuls" in r.text
    nina = signed_in(app, type("U", (), {"email": "nina@example.com"}), password)
    assert nina.get("/api/v1/users/me").json()["name"] == "Nina New"
    user_id = int(re.search(r'action="/admin/users/(\d+)/active"', r.text).group(1))
    # The same email again: the service's refusal, next to the form.
    r = admin.post("/admin/users", data={"email": "nina@example.com", "name": "Nina Twice"})
    assert r.status_code == 409 and "email: a user with this email exists" in r.text
    # A role needs its scope: the model's message, with its field.
    r = admin.post("/admin/users", data={"email": "z@example.com", "name": "Zed", "role": "venue_manager", "scope": ""})
    assert r.status_code == 422 and "takes a venue" in r.text
    # Disabling ends Nina's session at once.
    r = admin.post(f"/admin/users/{user_id}/active", data={"active": "false"}, follow_redirects=False)
    assert r.status_code == 303
    assert nina.get("/api/v1/users/me").status_code == 401
    admin.post(f"/admin/users/{user_id}/active", data={"active": "true"})
    r = admin.post(f"/admin/users/{user_id}/password")
    fresh = re.search(r'id="one-time-password">([^<]+)<', r.text).group(1)
    assert fresh != password
    assert (
        signed_in(app, type("U", (), {"email": "nina@example.com"}), fresh).get("/api/v1/users/me").status_code == 200
    )
    with read_session(engine) as s:
        actions = {a.action for a in s.exec(select(AuditEntry).where(AuditEntry.object_id == str(user_id))).all()}
    assert {"user.create", "user.update"} <= actions


def test_roles_are_added_and_removed(admin, make_user):
    user, _ = make_user(name="Rolf")
    r = admin.post(
        f"/admin/users/{user.id}/roles", data={"role": "venue_manager", "scope": "sports"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert admin.get(f"/api/v1/users/{user.id}").json()["roles"] == [
        {"role": "venue_manager", "site": None, "venue": "sports"}
    ]
    r = admin.post(f"/admin/users/{user.id}/roles", data={"role": "reception", "scope": "nowhere"})
    assert r.status_code == 422 and "roles.1.site" in r.text
    admin.post(f"/admin/users/{user.id}/roles/0/remove")
    assert admin.get(f"/api/v1/users/{user.id}").json()["roles"] == []
    assert admin.get("/admin/users/999999").status_code == 404


def test_credentials_badge_random_pin_and_qr(admin, make_user):
    user, _ = make_user({"role": "resident", "site": "les-tilleuls"}, name="Cora")
    r = admin.post(
        f"/admin/users/{user.id}/credentials", data={"kind": "badge", "value": "04:a1:b2:c3", "label": "blue fob"}
    )
    assert r.status_code == 201 and "04A1B2C3" in r.text.upper()
    r = admin.post(f"/admin/users/{user.id}/credentials", data={"kind": "pin"})
    assert r.status_code == 201
    pin = re.search(r'id="issued-secret">(\d{6})<', r.text).group(1)
    r = admin.post(f"/admin/users/{user.id}/credentials", data={"kind": "qr"})
    assert r.status_code == 201 and re.search(r'id="issued-secret">[\w-]{20,}<', r.text)
    page = admin.get(f"/admin/users/{user.id}").text
    assert pin not in page and "****" in page  # shown once, then masked
    r = admin.post(f"/admin/users/{user.id}/credentials", data={"kind": "pin", "value": "12"})
    assert r.status_code == 422 and "4 to 8 digits" in r.text
    creds = admin.get(f"/api/v1/users/{user.id}/credentials").json()
    assert [c["kind"] for c in creds] == ["badge", "pin", "qr"]
    r = admin.post(f"/admin/users/{user.id}/credentials/{creds[0]['id']}/revoke", follow_redirects=False)
    assert r.status_code == 303
    assert admin.get(f"/api/v1/users/{user.id}/credentials").json()[0]["revoked_at"] is not None


def test_site_file_errors_are_listed_by_path_and_a_good_file_applies(admin):
    bad = b"sites:\n  - key: Bad Key!\n    name: x\n    timezone: Mars/Olympus\n"
    r = admin.post("/admin/sites", files={"file": ("site.yaml", bad, "application/yaml")})
    assert r.status_code == 422
    errors = re.findall(r"<li>([^<]+)</li>", r.text.split('id="form-errors"')[1].split("</div>")[0])
    assert any(e.startswith("sites.0.key: ") for e in errors)
    assert any(e.startswith("sites.0.timezone: ") for e in errors)
    text = example_path().read_text().replace("name: Résidence Les Tilleuls", "name: Les Tilleuls (renamed)", 1)
    r = admin.post("/admin/sites", files={"file": ("residence.yaml", text.encode(), "application/yaml")})
    assert r.status_code == 200 and 'id="import-report"' in r.text
    assert "Les Tilleuls (renamed)" in admin.get("/admin/sites").text


def test_controllers_and_retention_pages(admin):
    page = admin.get("/admin/controllers").text
    assert "courts-ctl" in page and "Courts" in page
    page = admin.get("/admin/retention").text
    assert 'id="ret-les-tilleuls"' in page and 'value="90"' in page  # the visitors' default
    r = admin.post("/admin/retention/les-tilleuls", data={"retention_days": "30"}, follow_redirects=False)
    assert r.status_code == 303
    assert 'value="30"' in admin.get("/admin/retention").text
    r = admin.post("/admin/retention/les-tilleuls", data={"retention_days": "0"})
    assert r.status_code == 422 and "retention_days:" in r.text
    assert admin.post("/admin/retention/nowhere", data={"retention_days": "30"}).status_code == 404
