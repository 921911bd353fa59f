"""New passwords follow NIST SP 800-63B: length, no common or breached ones, no repetition or
sequence, no composition rules; each refusal says why."""

from __future__ import annotations

import pytest

from core.security import MAX_PASSWORD_LENGTH, WeakPassword, check_password


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("          ", "password_repetitive"),
        ("aaaaaaaaaa", "password_repetitive"),
        ("abcabcabcabc", "password_repetitive"),
        ("1234567890", "password_sequence"),
        ("9876543210", "password_sequence"),
        ("abcdefghijkl", "password_sequence"),
        ("qwertyuiop", "password_sequence"),
        ("password12", "password_common"),
        ("Password123!", "password_common"),
        ("iloveyou2024", "password_common"),
        ("short", "password_too_short"),
        ("x" * 9, "password_too_short"),
        ("ab1" * 300, "password_repetitive"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password, code):
    with pytest.raises(WeakPassword) as exc:
        check_password(password)
    assert exc.value.code == code


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # passphrases, spaces included
        "all lowercase no digits",  # no composition rules
        "tRoMbOnE-vélo-42",  # any Unicode
        "k" + "x9;Qz" * 12 + "m",  # 62 characters
        "é" * 3 + "z" * 7 + "w" * 54,  # 64 characters: long ones are welcome
    ],
)
def test_reasonable_passwords_are_accepted(password):
    check_password(password)


def test_the_maximum_is_at_least_64():
    assert MAX_PASSWORD_LENGTH >= 64
    with pytest.raises(WeakPassword) as exc:
        check_password("Zq8;" * (MAX_PASSWORD_LENGTH // 4 + 1))
    assert exc.value.code == "password_too_long"


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("          ", "password_repetitive"),
        ("aaaaaaaaaa", "password_repetitive"),
        ("1234567890", "password_sequence"),
        ("password12", "password_common"),
        ("short", "password_too_short"),
    ],
)
def test_the_api_refuses_them_with_422_and_the_reason(client, admin_headers, make_user, password, code):
    r = client.post(
        "/api/v1/users", json={"email": "new@example.com", "name": "New", "password": password}, headers=admin_headers
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "password", "code": code, "message": r.json()["errors"][0]["message"]}]
    user, _ = make_user()
    r = client.patch(f"/api/v1/users/{user.id}", json={"password": password}, headers=admin_headers)
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == code


def test_the_api_accepts_a_good_one(client, admin_headers):
    r = client.post(
        "/api/v1/users",
        json={"email": "new@example.com", "name": "New", "password": "violet tram at dawn"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
