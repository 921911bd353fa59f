"""The portal in a real browser, at a phone's size: sign in, see the places, sign out."""

from __future__ import annotations

import pytest

from bench.harness import serve

pytestmark = pytest.mark.usefixtures("example_site")


def test_sign_in_and_out_on_a_phone(browser, app, make_user, tmp_path):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    with serve(app) as base:
        context = browser.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
        page = context.new_page()
        page.goto(base + "/")
        assert page.url.endswith("/login")
        assert page.get_by_role("button", name="Se connecter").is_visible()
        page.fill("#email", user.email)
        page.fill("#password", "not-it-at-all")
        page.click("button[type=submit]")
        assert "incorrect" in page.get_by_role("alert").inner_text()
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        assert page.locator("h1").inner_text() == "Hello, Alice Martin"
        assert page.get_by_text("Tennis court 1").is_visible()
        # Nothing overflows sideways on a narrow screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
        page.click("header button")
        page.wait_for_url(base + "/login")
        page.goto(base + "/")
        assert page.url.endswith("/login")
        context.close()
