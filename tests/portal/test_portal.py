from __future__ import annotations

from tests.conftest import login


def test_login_page_in_three_languages(client):
    assert "Sign in" in client.get("/login").text
    assert "Se connecter" in client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).text
    assert "Anmelden" in client.get("/login", headers={"Accept-Language": "de"}).text


def test_portal_sign_in_home_and_sign_out(client, make_user, example_site):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice")
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    r = client.post("/login", data={"email": user.email, "password": "wrong-password"})
    assert r.status_code == 401 and "Wrong email or password" in r.text
    r = client.post("/login", data={"email": user.email, "password": password}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    home = client.get("/", headers={"Accept-Language": "en"})  # else the site's language (French)
    assert home.status_code == 200 and "Hello, Alice" in home.text
    assert "Tennis court 1" in home.text and "Visitor parking spaces" in home.text
    # The cookie session is the API's session too: it is revoked by signing out.
    assert client.get("/api/v1/users/me").status_code == 200
    assert client.post("/logout", follow_redirects=False).status_code == 303
    client.cookies.clear()
    assert client.get("/", follow_redirects=False).status_code == 303


def test_cross_site_form_post_is_refused(client, make_user):
    user, password = make_user()
    r = client.post(
        "/login", data={"email": user.email, "password": password}, headers={"Origin": "https://evil.example.net"}
    )
    assert r.status_code == 403 and r.json()["code"] == "bad_origin"


def test_home_shows_only_the_users_sites(client, make_user, example_site):
    user, password = make_user(name="Nobody")  # no role anywhere
    client.post("/login", data={"email": user.email, "password": password})
    assert "Tennis court 1" not in client.get("/").text
    headers = login(client, user.email, password)
    assert client.get("/api/v1/resources", headers=headers).json() == []
