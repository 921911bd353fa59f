"""An account's explicit language: set by the switcher and the profile when signed in, or by the
API; it comes before the browser's, which comes before the site's. Visitors not signed in keep
their choice in a cookie. Messages follow the account's choice, else the site's language."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.db import open_session
from core.models import Site, User
from notify.messages import PEOPLE, Context, Spec, people
from portal.layout import LANG_COOKIE

pytestmark = pytest.mark.usefixtures("example_site")

HTML = {"Accept": "text/html"}


def _hello(client, accept: str) -> str:
    text = client.get("/", headers={**HTML, "Accept-Language": accept}).text
    for lang, word in (("fr", "Bonjour"), ("de", "Hallo"), ("en", "Hello")):
        if f'<html lang="{lang}">' in text:
            assert word in text
            return lang
    raise AssertionError("no language")


def test_the_api_sets_clears_and_validates_my_language(client, make_user):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"})
    me = client.get("/api/v1/users/me", headers={"Authorization": "Bearer x"})
    assert me.status_code == 401
    client.post("/login", data={"email": user.email, "password": password})
    origin = {"Origin": "http://testserver"}  # the portal's cookie on the API: this host only
    assert client.get("/api/v1/users/me").json()["locale_chosen"] is False
    assert _hello(client, "de") == "de"  # never chose: the browser's
    r = client.patch("/api/v1/users/me", json={"locale": "fr"}, headers=origin)
    assert r.status_code == 200 and r.json()["locale"] == "fr" and r.json()["locale_chosen"] is True
    assert _hello(client, "de") == "fr"  # the account's choice first
    bad = client.patch("/api/v1/users/me", json={"locale": "es"}, headers=origin)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "locale" and bad.json()["errors"][0]["code"] == "unsupported_locale"
    assert "en, fr, de" in bad.json()["errors"][0]["message"]
    assert client.patch("/api/v1/users/me", json={"email": "x@y.z"}, headers=origin).status_code == 422
    assert client.get("/api/v1/users/me").json()["locale"] == "fr"  # nothing changed by the refusals
    r = client.patch("/api/v1/users/me", json={"locale": None}, headers=origin)
    assert r.status_code == 200 and r.json()["locale_chosen"] is False
    assert _hello(client, "de") == "de"
    assert _hello(client, "") == "fr"  # no browser language: the site's (a French residence)


def test_signed_in_the_switcher_and_the_profile_set_the_account(client, make_user):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"})
    client.post("/login", data={"email": user.email, "password": password})
    r = client.post("/lang", data={"lang": "de", "next": "/profile"}, follow_redirects=False)
    assert r.status_code == 303 and LANG_COOKIE not in r.cookies  # on the account, not in this browser
    me = client.get("/api/v1/users/me").json()
    assert (me["locale"], me["locale_chosen"]) == ("de", True)
    assert _hello(client, "fr") == "de"
    profile = client.get("/profile", headers={**HTML, "Accept-Language": "fr"}).text
    assert '<option value="de" lang="de" selected>' in profile
    r = client.post("/lang", data={"lang": "auto", "next": "/profile?done=language"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/profile?done=language"
    assert client.get("/api/v1/users/me").json()["locale_chosen"] is False
    assert _hello(client, "fr") == "fr"
    assert '<option value="auto" selected>' in client.get("/profile", headers=HTML).text


def test_visitors_not_signed_in_keep_their_choice_in_a_cookie(client):
    r = client.post("/lang", data={"lang": "de", "next": "/login"}, follow_redirects=False)
    assert r.status_code == 303 and r.cookies.get(LANG_COOKIE) == "de"
    assert '<html lang="de">' in client.get("/login", headers={**HTML, "Accept-Language": "fr"}).text
    # "auto" means something only for an account.
    assert client.post("/lang", data={"lang": "auto"}, follow_redirects=False).status_code == 404


def test_messages_follow_the_account_choice_else_the_site(engine, make_user):
    chose, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    never, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    with open_session(engine) as s:
        site = s.exec(select(Site).where(Site.key == "les-tilleuls")).one()
        row = s.get(User, chose.id)
        assert row is not None
        row.locale, row.locale_chosen = "de", True
        ctx = Context(event_id=1, kind="test", payload={"recipients": [chose.id, never.id]}, site=site)
        got = {user_id: lang for _addr, _name, lang, user_id in people(s, ctx, Spec("x", "y", PEOPLE))}
    assert got == {chose.id: "de", never.id: "fr"}
