"""axe-core in a real browser: 0 violations on every page of the residents' part and the shared
pages (sign-in, home, profile, error pages), for a resident and a manager, at a phone's width and
at desktop width; each page is captured as a test artefact."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe

from bench.harness import serve
from tests.e2e.test_portal_resident import DESKTOP, PHONE, artefacts, sign_in

pytestmark = pytest.mark.usefixtures("example_site")

AXE = Axe()


@pytest.fixture(autouse=True)
def _one_database(backend):
    """The markup does not depend on the database: checked once, on SQLite (the flows run on both
    in test_portal_resident)."""
    if backend != "sqlite":
        pytest.skip("markup checks run on SQLite only")


def check(page, name: str, width: str) -> list[str]:
    """axe's violations on the page as it stands (every rule axe has, best practices included)."""
    page.screenshot(path=str(artefacts() / f"{name}-{width}.png"), full_page=True)
    results = AXE.run(page)
    return [
        f"{name} ({width}): {v['id']}: {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["360px", "desktop"])
def test_resident_pages_have_no_axe_violations(browser, app, make_user, viewport):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    width = f"{viewport['width']}"
    found: list[str] = []
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    with serve(app) as base:
        context = browser.new_context(viewport=viewport, locale="en-GB")
        page = context.new_page()
        page.goto(base + "/login")
        found += check(page, "login", width)
        page.fill("#email", user.email)
        page.fill("#password", "not-it-at-all")
        page.click("button[type=submit]")
        found += check(page, "login-refused", width)
        sign_in(page, base, user.email, password)
        found += check(page, "home", width)
        page.goto(base + f"/book?venue=sports&day={day}")
        found += check(page, "calendar", width)
        page.goto(base + "/book/resource/meeting-room")
        found += check(page, "week", width)
        page.goto(base + f"/book?venue=sports&day={day}")
        page.locator("ul.slots a.slot-free").nth(4).click()
        page.wait_for_url(re.compile(r"/book/new"))
        found += check(page, "book", width)
        page.click("summary")
        page.fill("#beneficiaries", "nobody-here@example.com")
        page.get_by_role("button", name="Book", exact=True).click()
        page.wait_for_load_state()
        assert page.locator("#beneficiaries-error").is_visible()
        found += check(page, "book-refused", width)
        page.fill("#beneficiaries", "")
        page.get_by_role("button", name="Book", exact=True).click()
        page.wait_for_url(re.compile(r"/reservations"))
        found += check(page, "reservations", width)
        rid = page.locator("section[aria-labelledby=up-h] ul.bookings > li").first.get_attribute("id")[1:]
        for action in ("reschedule", "duplicate", "cancel"):
            page.goto(base + f"/reservations/{rid}/{action}")
            found += check(page, action, width)
        # A weekly series, then its pages.
        page.goto(base + f"/book?venue=sports&day={day}")
        page.locator("ul.slots a.slot-free").nth(8).click()
        page.wait_for_url(re.compile(r"/book/new"))
        page.locator("summary", has_text="Repeat").click()
        page.select_option("#repeat", "1")
        page.fill("#count", "2")
        page.get_by_role("button", name="Book", exact=True).click()
        page.wait_for_url(re.compile(r"/reservations\?done=series"))
        edit = page.locator("a[href^='/series/'][href*='/edit']").first.get_attribute("href")
        assert edit is not None
        page.goto(base + edit)
        found += check(page, "series-edit", width)
        page.goto(base + edit.replace("/edit", "/cancel"))
        found += check(page, "series-cancel", width)
        page.goto(base + "/waitlist")
        found += check(page, "waitlist", width)
        page.goto(base + "/profile")
        found += check(page, "profile", width)
        page.fill("#current_password", "not-my-password")
        page.fill("#new_password", "short")
        page.evaluate("document.getElementById('new_password').removeAttribute('minlength')")
        page.get_by_role("button", name="Change my password").click()
        page.wait_for_load_state()
        found += check(page, "profile-refused", width)
        assert page.goto(base + "/no-such-page").status == 404
        found += check(page, "not-found", width)
        assert page.goto(base + "/doors").status == 403
        found += check(page, "forbidden", width)
        # Keyboard: the first Tab reaches the skip link, which leads to the main content.
        page.goto(base + "/reservations")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        context.close()
    assert not found, "\n".join(found)


def test_shared_pages_for_a_manager_have_no_axe_violations(browser, app, make_user):
    user, password = make_user({"role": "venue_manager", "venue": "sports"}, name="Marc Manager")
    found: list[str] = []
    with serve(app) as base:
        context = browser.new_context(viewport=PHONE, locale="fr-FR")
        page = context.new_page()
        sign_in(page, base, user.email, password)
        found += check(page, "manager-home", "360")
        assert page.locator("nav a[href='/reservations']").count() == 0  # not a resident's menu
        page.goto(base + "/profile")
        found += check(page, "manager-profile", "360")
        context.close()
    assert not found, "\n".join(found)
