"""Reception in a real headless Chromium: the desk's scan field takes a code typed like a scanner
does (the characters, then Enter) and checks the visitor in; the on-site board open in a second
page gains the visitor and loses them at check-out without reloading and without taking the
keyboard focus from the field the receptionist is typing in."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bench.harness import serve
from core.db import utcnow
from tests.conftest import login
from tests.vms.conftest import decode_qr

pytestmark = pytest.mark.usefixtures("example_site")
SITE = "les-tilleuls"


def _sign_in(context, base: str, email: str, password: str):
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    return page


def test_desk_scan_and_live_board(browser, app, client, make_user, tmp_path):
    rita, rpw = make_user({"role": "reception", "site": SITE}, name="Rita Reception")
    hugo, hpw = make_user({"role": "reception", "site": SITE}, name="Hugo Host")  # staff host: every door
    host = login(client, hugo.email, hpw)
    now = utcnow()
    r = client.post(
        "/api/v1/visits",
        headers=host,
        json={
            "site": SITE,
            "visitors": [{"name": "Vic <i>Visitor</i>", "company": "Acme"}],
            "start": (now - timedelta(minutes=5)).isoformat(),
            "end": (now + timedelta(hours=2)).isoformat(),
        },
    )
    assert r.status_code == 201, r.text
    visit = r.json()[0]
    token = decode_qr(client.get(visit["qr_png"], headers=host).content)
    app.state.visit_feed.ping = 1
    with serve(app) as base:
        context = browser.new_context(viewport={"width": 1024, "height": 900}, locale="en-GB")
        desk = _sign_in(context, base, rita.email, rpw)
        board = context.new_page()
        board.goto(base + f"/reception/board?site={SITE}")
        board.wait_for_selector('#live[data-state="open"]')
        board.evaluate("window.__loadedOnce = true")
        board.click("#note")
        board.keyboard.type("parcel for B-03")
        assert board.locator("#board tbody tr").count() == 0

        desk.goto(base + "/reception")
        desk.wait_for_function("document.activeElement && document.activeElement.id === 'token'")  # autofocus
        desk.keyboard.type(token)
        desk.keyboard.press("Enter")
        desk.wait_for_selector('#outcome[data-code="checked_in"]')
        assert "Vic <i>Visitor</i>" in desk.locator("#outcome").inner_text()  # shown as text, not markup
        desk.wait_for_function("document.activeElement.id === 'token'")  # ready for the next visitor

        row = board.locator(f'#board tr[data-visit="{visit["id"]}"]')
        row.wait_for(timeout=10_000)
        assert "Vic <i>Visitor</i>" in row.inner_text() and "Acme" in row.inner_text()
        assert board.locator("#count").inner_text() == "1"
        assert board.evaluate("window.__loadedOnce") is True  # no reload
        assert board.evaluate("document.activeElement.id") == "note"  # focus untouched
        assert board.input_value("#note") == "parcel for B-03"

        # A bad scan says why, and the desk stays ready.
        desk.keyboard.type(token)
        desk.keyboard.press("Enter")
        desk.wait_for_selector('#outcome[data-code="already_on_site"]')

        desk.click(f'#expected tr[data-visit="{visit["id"]}"] button:has-text("Check out")')
        desk.wait_for_selector('#outcome[data-code="checked_out"]')
        row.wait_for(state="detached", timeout=10_000)
        assert board.locator("#count").inner_text() == "0"
        assert board.evaluate("window.__loadedOnce") is True
        desk.screenshot(path=str(tmp_path / "desk.png"), full_page=True)
        context.close()
