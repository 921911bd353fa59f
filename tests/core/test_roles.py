from __future__ import annotations

import re

import pytest

from tests.conftest import login

PUBLIC = {"/api/v1/auth/token", "/healthz", "/readyz", "/login", "/", "/logout"}


def test_every_api_route_needs_authentication(app, client):
    paths = {p: ops for p, ops in app.openapi()["paths"].items() if p not in PUBLIC}
    assert len(paths) >= 6
    for template, ops in paths.items():
        path = re.sub(r"\{[^}]+\}", "1", template)
        for method in ops:
            r = client.request(method.upper(), path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"email": "n@example.com", "name": "N"}),
        ("PATCH", "/api/v1/users/1", {"name": "x"}),
        ("GET", "/api/v1/api-keys", None),
        ("POST", "/api/v1/site-config", None),
    ],
)
def test_admin_routes_refuse_other_roles(client, make_user, example_site, method, path, body):
    for roles in (
        [{"role": "resident", "site": "les-tilleuls"}],
        [{"role": "venue_manager", "venue": "sports"}],
        [{"role": "reception", "site": "les-tilleuls"}],
    ):
        user, password = make_user(*roles)
        headers = login(client, user.email, password)
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (roles, r.text)
        assert r.json()["code"] == "forbidden_role"


def test_admin_creates_users_with_scoped_roles(client, admin_headers, example_site):
    r = client.post(
        "/api/v1/users",
        json={
            "email": "Mgr@Example.com",
            "name": "Manager",
            "password": "a-long-password",
            "roles": [{"role": "venue_manager", "venue": "sports"}, {"role": "resident", "site": "les-tilleuls"}],
        },
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "mgr@example.com"
    assert {(x["role"], x["site"], x["venue"]) for x in r.json()["roles"]} == {
        ("venue_manager", None, "sports"),
        ("resident", "les-tilleuls", None),
    }
    headers = login(client, "mgr@example.com", "a-long-password")
    assert client.get("/api/v1/users/me", headers=headers).json()["name"] == "Manager"
    # Same email again: conflict, not a 500.
    r = client.post("/api/v1/users", json={"email": "mgr@example.com", "name": "Again"}, headers=admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    ("role", "expect_field", "expect_code"),
    [
        ({"role": "venue_manager"}, "roles.0", "value_error"),
        ({"role": "admin", "site": "les-tilleuls"}, "roles.0", "value_error"),
        ({"role": "reception", "site": "nowhere"}, "roles.0.site", "unknown_site"),
        ({"role": "venue_manager", "venue": "nowhere"}, "roles.0.venue", "unknown_venue"),
        ({"role": "emperor"}, "roles.0.role", "enum"),
    ],
)
def test_bad_roles_are_422_and_nothing_written(client, admin_headers, example_site, role, expect_field, expect_code):
    r = client.post(
        "/api/v1/users", json={"email": "x@example.com", "name": "X", "roles": [role]}, headers=admin_headers
    )
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == expect_field and err["code"] == expect_code
    users = client.get("/api/v1/users", params={"q": "x@example"}, headers=admin_headers).json()
    assert users == []


def test_unknown_fields_and_short_password_are_422(client, admin_headers):
    r = client.post(
        "/api/v1/users", json={"email": "y@example.com", "name": "Y", "is_admin": True}, headers=admin_headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "is_admin"
    r = client.post(
        "/api/v1/users", json={"email": "y@example.com", "name": "Y", "password": "short"}, headers=admin_headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "password"
    r = client.post("/api/v1/users", json={"email": "not-an-email", "name": "Y"}, headers=admin_headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "email"


def test_unknown_user_is_404(client, admin_headers):
    r = client.get("/api/v1/users/999999", headers=admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
