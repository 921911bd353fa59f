"""The portal's cookie is no key for other sites: unsafe API requests it authenticates must come
from this host. Pages carry a CSP without inline code; every response says nosniff and same-origin."""

from __future__ import annotations

import re

import pytest

from tests.conftest import login


def _cookie_client(client, make_user):
    user, password = make_user()
    r = client.post("/login", data={"email": user.email, "password": password}, follow_redirects=False)
    assert r.status_code == 303 and client.cookies.get("bookgate_session")
    return user, password


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example.net"},
        {"Referer": "https://evil.example.net/page"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
        {},  # says nothing of where it comes from: refused (see core.deps.check_cookie_origin)
    ],
)
def test_a_cookie_request_from_elsewhere_is_refused(client, make_user, headers):
    _cookie_client(client, make_user)
    r = client.post("/api/v1/auth/logout", headers=headers)
    assert r.status_code == 403 and r.json()["code"] == "bad_origin"
    assert client.get("/api/v1/users/me").status_code == 200  # reading is not a state change; still signed in


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://testserver"}, {"Referer": "http://testserver/"}, {"Sec-Fetch-Site": "same-origin"}],
)
def test_a_cookie_request_from_this_host_passes(client, make_user, headers):
    _cookie_client(client, make_user)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/users/me").status_code == 401


def test_bearer_requests_are_unaffected(client, make_user):
    user, password = make_user()
    headers = login(client, user.email, password)
    client.cookies.clear()
    r = client.post("/api/v1/auth/logout", headers={**headers, "Origin": "https://evil.example.net"})
    assert r.status_code == 204


def test_pages_carry_a_strict_csp_and_no_inline_code(client):
    r = client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self';" in csp  # the portal's own script files only, never inline code
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", r.text, re.IGNORECASE)
    css = re.search(r'<link rel="stylesheet" href="([^"]+)">', r.text)
    assert css is not None
    sheet = client.get(css.group(1))
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
    assert ".card" in sheet.text and sheet.headers["x-content-type-options"] == "nosniff"


def test_a_refused_sign_in_page_has_the_headers_too(client):
    r = client.post("/login", data={"email": "nobody@example.com", "password": "wrong-password"})
    assert r.status_code == 401 and "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_api_responses_say_nosniff_and_same_origin(client, make_user):
    for r in (
        client.get("/healthz"),
        client.get("/api/v1/users/me"),  # an error response too
        client.post("/api/v1/auth/token", data={"username": "x@example.com"}),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
