from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import func, select

from core.audit import AuditEntry
from core.db import read_session, utcnow, write_session
from core.models import AuthSession, LoginAttempt, User
from tests.conftest import login


def test_login_then_me(client, make_user):
    user, password = make_user({"role": "admin"}, name="Ana")
    headers = login(client, user.email.upper(), password)  # emails are case-insensitive
    r = client.get("/api/v1/users/me", headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert body["email"] == user.email and body["name"] == "Ana"
    assert body["roles"] == [{"role": "admin", "site": None, "venue": None}]
    assert "password_hash" not in body


def test_token_is_opaque_and_stored_only_as_hash(client, make_user, engine):
    user, password = make_user()
    token = login(client, user.email, password)["Authorization"].split()[1]
    assert token.startswith("bgs_") and len(token) > 40
    with read_session(engine) as s:
        rows = s.exec(select(AuthSession)).all()
    assert len(rows) == 1 and token not in rows[0].token_hash and len(rows[0].token_hash) == 64


def test_wrong_password_is_401_with_code_and_audited(client, make_user, engine):
    user, _ = make_user()
    r = client.post("/api/v1/auth/token", data={"username": user.email, "password": "not-the-password"})
    assert r.status_code == 401
    assert r.json()["code"] == "bad_credentials"
    r = client.post("/api/v1/auth/token", data={"username": "nobody@example.com", "password": "whatever123"})
    assert r.status_code == 401 and r.json()["code"] == "bad_credentials"
    with read_session(engine) as s:
        failures = s.exec(select(AuditEntry).where(AuditEntry.action == "auth.login_failed")).all()
    assert {f.object_id for f in failures} == {user.email, "nobody@example.com"}
    assert all(f.client_addr for f in failures)


def test_missing_form_fields_are_422(client):
    r = client.post("/api/v1/auth/token", data={"username": "x@example.com"})
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert r.json()["errors"][0]["field"] == "password"


def test_expired_token_is_refused(client, make_user, engine):
    user, password = make_user()
    headers = login(client, user.email, password)
    with write_session(engine) as s:
        s.exec(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.get("/api/v1/users/me", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


def test_logout_revokes_the_token(client, make_user):
    user, password = make_user()
    headers = login(client, user.email, password)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    r = client.get("/api/v1/users/me", headers=headers)
    assert r.status_code == 401


def test_disabling_a_user_revokes_sessions_and_blocks_login(client, make_user, admin_headers):
    user, password = make_user()
    headers = login(client, user.email, password)
    r = client.patch(f"/api/v1/users/{user.id}", json={"is_active": False}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": user.email, "password": password})
    assert r.status_code == 401


def test_rate_limit_per_account(client, make_user, settings, engine):
    user, password = make_user()
    for _ in range(settings.login_max_failures_per_account_address):
        r = client.post("/api/v1/auth/token", data={"username": user.email, "password": "wrong-password"})
        assert r.status_code == 401
    # Even the right password is refused while the account is throttled.
    r = client.post("/api/v1/auth/token", data={"username": user.email, "password": password})
    assert r.status_code == 429
    assert r.json()["code"] == "too_many_attempts"
    assert int(r.headers["Retry-After"]) > 0
    # Once the window has passed, the right password works again.
    with write_session(engine) as s:
        s.exec(update(LoginAttempt).values(at=utcnow() - timedelta(seconds=settings.login_window_seconds + 1)))
    assert client.post("/api/v1/auth/token", data={"username": user.email, "password": password}).status_code == 200


def test_rate_limit_per_address(client, make_user, settings, engine):
    user, password = make_user()
    for i in range(settings.login_max_failures_per_address):
        r = client.post("/api/v1/auth/token", data={"username": f"guess{i}@example.com", "password": "x" * 12})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": user.email, "password": password})
    assert r.status_code == 429
    with read_session(engine) as s:
        assert (
            s.exec(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "auth.login_throttled")
            ).one()
            == 1
        )


def test_success_clears_the_account_failures(client, make_user, settings):
    user, password = make_user()
    for _ in range(settings.login_max_failures_per_account_address - 1):
        client.post("/api/v1/auth/token", data={"username": user.email, "password": "wrong-password"})
    login(client, user.email, password)
    for _ in range(settings.login_max_failures_per_account_address - 1):
        r = client.post("/api/v1/auth/token", data={"username": user.email, "password": "wrong-password"})
        assert r.status_code == 401


def test_password_stored_as_argon2id(engine, make_user):
    user, password = make_user()
    with read_session(engine) as s:
        stored = s.get(User, user.id).password_hash
    assert stored.startswith("$argon2id$") and password not in stored


def test_api_key_lifecycle(client, make_user, admin_headers, engine):
    machine, _ = make_user({"role": "admin"}, name="Integration")
    r = client.post("/api/v1/api-keys", json={"user_id": machine.id, "name": "ci"}, headers=admin_headers)
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("bgk_")
    key_headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/users/me", headers=key_headers).json()["id"] == machine.id
    listed = client.get("/api/v1/api-keys", headers=admin_headers).json()
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert client.delete(f"/api/v1/api-keys/{r.json()['id']}", headers=admin_headers).status_code == 204
    assert client.get("/api/v1/users/me", headers=key_headers).status_code == 401
    # An API key is not a session: logout with it is refused with a reason.
    r2 = client.post("/api/v1/api-keys", json={"user_id": machine.id, "name": "x"}, headers=admin_headers)
    r = client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {r2.json()['key']}"})
    assert r.status_code == 422 and r.json()["code"] == "not_a_session"


def test_garbage_tokens_are_401(client):
    for token in ("", "bgs_nope", "bgk_nope", "x" * 5000):
        r = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token


def test_the_audit_row_counts_every_session_and_key_a_disabling_revokes(client, make_user, engine, admin_headers):
    """A password change and a disabling in one update each revoke sessions: both are counted."""
    user, password = make_user({"role": "admin"})
    login(client, user.email, password)
    login(client, user.email, password)
    key = client.post("/api/v1/api-keys", json={"user_id": user.id, "name": "reader"}, headers=admin_headers)
    assert key.status_code == 201, key.text
    r = client.patch(
        f"/api/v1/users/{user.id}", json={"password": "a-new-long-password", "is_active": False}, headers=admin_headers
    )
    assert r.status_code == 200, r.text
    with read_session(engine) as s:
        row = s.exec(select(AuditEntry).where(AuditEntry.action == "user.update")).all()[-1]
    import json

    summary = row.summary if isinstance(row.summary, dict) else json.loads(row.summary)
    assert summary["sessions_revoked"] == 2
    assert summary["api_keys_revoked"] == 1


def test_password_hashing_follows_the_settings_and_old_hashes_are_upgraded_at_login(engine, settings, make_user):
    """No module-wide hasher: the cost comes from the settings, and a hash made at another cost is
    redone at the next successful login."""
    from config import Settings
    from core import auth
    from core.security import hashing_for

    cheap = hashing_for(settings)
    assert cheap is hashing_for(settings)  # one object per cost
    stronger = Settings(_env_file=None, argon2_time_cost=2, argon2_memory_kib=2048, argon2_parallelism=1)
    user, password = make_user()
    with read_session(engine) as s:
        before = s.get(User, user.id).password_hash
    assert cheap.verify(before, password) and not hashing_for(stronger).verify(before, "wrong password!")
    assert hashing_for(stronger).needs_rehash(before)
    auth.login(engine, stronger, user.email, password, "127.0.0.1")
    with read_session(engine) as s:
        after = s.get(User, user.id).password_hash
    assert after != before and "t=2" in after and not hashing_for(stronger).needs_rehash(after)


def test_a_token_resolves_in_one_statement_to_what_load_principal_builds(client, make_user, engine, example_site):
    """`resolve_token` joins the session, the user and the role grants: the principal it builds
    equals the one built from the user row and a query of its grants, roles or none; a user
    deactivated behind a live session is refused."""
    import pytest
    from sqlalchemy import event

    from core.auth import load_principal, resolve_token
    from core.errors import Unauthorized

    many, pw_many = make_user(
        {"role": "resident", "site": "les-tilleuls"},
        {"role": "reception", "site": "les-tilleuls"},
        {"role": "venue_manager", "venue": "sports"},
    )
    none, pw_none = make_user()
    for user, password in ((many, pw_many), (none, pw_none)):
        token = login(client, user.email, password)["Authorization"].split()[1]
        statements: list[str] = []
        with read_session(engine) as s:
            conn = s.connection()
            event.listen(conn, "before_cursor_execute", lambda *a, seen=statements: seen.append(a[2]))
            got = resolve_token(s, token, "127.0.0.1")
            assert len(statements) == 1
            want = load_principal(s, s.get(User, user.id), session_id=got.session_id, client_addr="127.0.0.1")
        assert got == want and got.session_id is not None
    assert got.roles == set() and many.id != none.id
    with write_session(engine) as s:
        s.exec(update(User).where(User.id == none.id).values(is_active=False))
    with read_session(engine) as s, pytest.raises(Unauthorized):
        resolve_token(s, token)
