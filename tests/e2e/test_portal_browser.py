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
        assert page.locator("h1").inner_text() == "Bonjour, Alice Martin"  # the browser's language
        assert page.get_by_text("Tennis court 1").is_visible()
        # Nothing overflows sideways on a narrow screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
        page.click("header button")
        page.wait_for_url(base + "/login")
        page.goto(base + "/")
        assert page.url.endswith("/login")
        context.close()


def test_the_doors_board_shows_controllers_and_explained_events(browser, app, engine, make_user, tmp_path):
    from datetime import timedelta

    from access import events
    from access.protocol import DoorEvent
    from core.db import utcnow, write_session

    manager, password = make_user({"role": "venue_manager", "venue": "sports"}, name="Marc Manager")
    resident, rpw = make_user({"role": "resident", "site": "les-tilleuls"})
    with write_session(engine) as s:
        events.record(s, DoorEvent("courts-ctl", "denied", "0BADC0DE", 1, utcnow() - timedelta(seconds=5), {}))
    with serve(app) as base:
        context = browser.new_context(viewport={"width": 390, "height": 844}, locale="de-DE")
        page = context.new_page()
        page.goto(base + "/login")
        page.fill("#email", resident.email)
        page.fill("#password", rpw)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        assert page.locator("a[href='/doors']").count() == 0  # residents have no doors board
        assert page.goto(base + "/doors").status == 403
        page.click("header button")
        page.wait_for_url(base + "/login")
        page.fill("#email", manager.email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.click("a[href='/doors']")
        page.wait_for_url(base + "/doors")
        assert page.locator("h1").inner_text() == "Türen und Steuerungen"  # the browser's language (no choice made)
        assert page.get_by_text("Courts gate reader (esp-rfid)").is_visible()
        assert page.get_by_text("Entrance reader (esp-rfid)").count() == 0  # not one of Marc's doors
        row = page.locator("#events tr.event-denied").first
        assert "abgelehnt" in row.inner_text() and "0BADC0DE" in row.inner_text()  # "denied", in German
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "doors.png"), full_page=True)
        context.close()
