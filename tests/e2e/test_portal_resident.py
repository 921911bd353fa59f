"""A resident in a real browser at a phone's width: books a court from the calendar in three taps
or fewer, finds it in "my reservations", cancels it; a request on a moderated room shows
confirmed once a manager approves it; the language switch changes every string of the page."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bench.harness import serve
from core.i18n import LOCALE_DIR
from tests.e2e.conftest import update_docs_screenshot

pytestmark = pytest.mark.usefixtures("example_site")

ROOT = Path(__file__).resolve().parents[2]
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 900}


def artefacts() -> Path:
    """Screenshots kept after the run (CI uploads them): $BOOKGATE_ARTEFACTS, else <tmp>/artefacts."""
    out = Path(os.environ.get("BOOKGATE_ARTEFACTS") or Path(tempfile.gettempdir()) / "artefacts") / "portal"
    out.mkdir(parents=True, exist_ok=True)
    return out


def sign_in(page, base: str, email: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_a_court_in_three_taps_then_cancelled(browser, app, make_user):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    with serve(app) as base:
        context = browser.new_context(viewport=PHONE, locale="en-GB")
        page = context.new_page()
        sign_in(page, base, user.email, password)
        in_two_days = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        page.goto(base + f"/book?kind=court&day={in_two_days}")
        assert page.title().startswith("Find a free slot")
        assert page.locator("ul.next a.slot").count() >= 1  # the nearest free times come first
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
        page.screenshot(path=str(artefacts() / "calendar-360.png"), full_page=True)
        taps = 0
        # Tap 1: a free slot of the day (far enough ahead to be cancelled later).
        first = page.locator("ul.slots a.slot-free").nth(3)
        court = first.locator("xpath=ancestor::ul[1]/preceding-sibling::h3[1]/a").inner_text()
        assert court.startswith("Tennis court")
        first.click()
        taps += 1
        page.wait_for_url(re.compile(r"/book/new\?"))
        assert page.locator("h1").inner_text() == f"Book {court}"
        # Tap 2: book (beneficiaries, places and note are optional).
        page.get_by_role("button", name="Book", exact=True).click()
        taps += 1
        page.wait_for_url(re.compile(r"/reservations\?done=booked"))
        assert taps <= 3
        assert page.get_by_role("status").inner_text() == "Booked."
        booking = page.locator("section[aria-labelledby=up-h] ul.bookings > li").first
        assert court in booking.inner_text() and "confirmed" in booking.inner_text()
        # The calendar now shows the slot as mine.
        page.goto(base + "/book?kind=court")
        assert page.locator(".slot-mine").count() >= 1
        # Cancel it: the link, then the confirmation.
        page.goto(base + "/reservations")
        page.locator("section[aria-labelledby=up-h] ul.bookings > li").first.get_by_role("link", name="Cancel").click()
        page.wait_for_url(re.compile(r"/cancel$"))
        page.fill("#reason", "rain")
        page.get_by_role("button", name="Cancel this booking").click()
        page.wait_for_url(re.compile(r"/reservations\?done=cancelled"))
        assert page.locator("section[aria-labelledby=up-h] ul.bookings > li").count() == 0
        closed = page.locator("section[aria-labelledby=past-h] ul.bookings > li").first.inner_text()
        assert court in closed and "cancelled" in closed
        context.close()

        # The same calendar at desktop width, for the README.
        context = browser.new_context(viewport=DESKTOP, locale="en-GB")
        page = context.new_page()
        sign_in(page, base, user.email, password)
        page.goto(base + "/book?venue=sports")
        shot = artefacts() / "calendar-desktop.png"
        page.screenshot(path=str(shot), full_page=False)
        update_docs_screenshot(shot, "portal-calendar.png")
        page.set_viewport_size({"width": 360, "height": 760})
        page.goto(base + "/")
        page.screenshot(path=str(artefacts() / "home-phone.png"), full_page=False)
        update_docs_screenshot(artefacts() / "home-phone.png", "portal-home.png")
        context.close()


def _next_weekend_day(days_ahead: int = 3) -> str:
    day = datetime.now(UTC).date() + timedelta(days=days_ahead)
    while day.weekday() not in (4, 5):  # the party room opens Friday to Sunday; Saturday noon is safe
        day += timedelta(days=1)
    return day.isoformat()


def test_a_moderated_request_shows_confirmed_after_the_managers_approval(browser, app, make_user):
    resident, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Bruno")
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"}, name="Marc")
    with serve(app) as base:
        context = browser.new_context(viewport=PHONE, locale="en-GB")
        page = context.new_page()
        sign_in(page, base, resident.email, password)
        page.goto(base + f"/book?venue=common-rooms&day={_next_weekend_day()}")
        page.locator("a.slot[href*='resource=party-room']").nth(2).click()
        assert page.get_by_text("A manager confirms this request.").is_visible()
        page.get_by_role("button", name="Book", exact=True).click()
        page.wait_for_url(re.compile(r"/reservations\?done=requested"))
        waiting = page.locator("section[aria-labelledby=pend-h] ul.bookings > li").first
        assert "Party room" in waiting.inner_text() and "waiting for a manager" in waiting.inner_text()
        rid = int((waiting.get_attribute("id") or "r0")[1:])
        # The manager approves it from the moderation queue, in a browser of their own.
        managers = browser.new_context(viewport=DESKTOP, locale="en-GB")
        desk = managers.new_page()
        sign_in(desk, base, manager.email, mpw)
        desk.goto(base + "/moderation")
        desk.locator(f"form[action='/moderation/{rid}/approve'] button[type=submit]").click()
        desk.wait_for_load_state()
        managers.close()
        page.reload()
        confirmed = page.locator(f"#r{rid}")
        assert "confirmed" in confirmed.inner_text()
        assert page.locator("section[aria-labelledby=up-h]").locator(f"#r{rid}").count() == 1
        context.close()


def _catalog(lang: str) -> dict[str, str]:
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        return {m.id: m.string for m in read_po(fh) if isinstance(m.id, str) and m.id and m.string}


LEAF_TEXTS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.children.length === 0 && el.textContent.trim()) out.push(el.textContent.trim());
    for (const a of ['aria-label', 'title', 'placeholder']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
  }
  out.push(document.title);
  return out;
}"""


@pytest.mark.parametrize("path", ["/book?kind=court", "/reservations", "/profile", "/"])
def test_the_language_switch_changes_every_string(browser, app, make_user, backend, path):
    if backend != "sqlite":
        pytest.skip("the strings of a page do not depend on the database: checked on SQLite")
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Clara")
    fr = _catalog("fr")
    with serve(app) as base:
        context = browser.new_context(viewport=PHONE, locale="en-GB")
        page = context.new_page()
        sign_in(page, base, user.email, password)
        page.goto(base + path)
        english = set(page.evaluate(LEAF_TEXTS))
        translated = {s for s in english if s in fr and fr[s] != s}
        assert len(translated) >= 5, english
        page.get_by_role("button", name="Français").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "fr"
        french = set(page.evaluate(LEAF_TEXTS))
        left = {s for s in french if s in fr and fr[s] != s}
        assert not left, f"still in English after switching: {left}"
        assert {fr[s] for s in translated} <= french | {t for t in french for s in translated if fr[s] in t}
        context.close()
