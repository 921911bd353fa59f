"""The waitlist in a real browser: a resident books a court; another finds it full on the calendar,
joins its waitlist from the slot, and, once the first cancels, accepts the offer and has the court.
The waitlist pages, a manager's queue and the admins' webhooks page pass axe with 0 violations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bench.harness import serve
from tests.e2e.test_portal_a11y import check
from tests.e2e.test_portal_resident import PHONE, sign_in

pytestmark = pytest.mark.usefixtures("example_site")


def test_join_from_a_full_slot_then_accept_the_offer(browser, app, make_user, backend):
    alice, alice_pw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    bruno, bruno_pw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Bruno Petit")
    manager, manager_pw = make_user({"role": "venue_manager", "venue": "sports"}, name="Marc Manager")
    admin, admin_pw = make_user({"role": "admin"}, name="Ada Admin")
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    found: list[str] = []
    with serve(app) as base:
        first = browser.new_context(viewport=PHONE, locale="en-GB").new_page()
        sign_in(first, base, alice.email, alice_pw)
        first.goto(base + f"/book?venue=sports&day={day}")
        slot = first.locator("ul.slots a.slot-free").nth(6)
        slot.click()
        first.wait_for_url(re.compile(r"/book/new\?"))
        court = first.locator("h1").inner_text().removeprefix("Book ")
        first.get_by_role("button", name="Book", exact=True).click()
        first.wait_for_url(re.compile(r"/reservations\?done=booked"))

        second = browser.new_context(viewport=PHONE, locale="en-GB").new_page()
        sign_in(second, base, bruno.email, bruno_pw)
        second.goto(base + f"/book?venue=sports&day={day}")
        full = second.locator("ul.slots a.slot-full[href^='/waitlist/join']")
        assert full.count() == 1 and "join the waitlist" in full.inner_text()
        full.click()
        second.wait_for_url(re.compile(r"/waitlist/join\?"))
        assert court in second.locator("main").inner_text()
        found += check(second, "waitlist-join", "360")
        second.get_by_role("button", name="Join the waitlist").click()
        second.wait_for_url(re.compile(r"/waitlist\?done=joined"))
        assert second.get_by_role("status").inner_text() == "You are on the waitlist."
        assert "waiting" in second.locator("#waitlist").inner_text()
        found += check(second, "waitlist-waiting", "360")

        # The first resident cancels: the place is offered to the second, and held for them.
        first.goto(base + "/reservations")
        first.locator("section[aria-labelledby=up-h] ul.bookings > li").first.get_by_role("link", name="Cancel").click()
        first.wait_for_url(re.compile(r"/cancel$"))
        first.get_by_role("button", name="Cancel this booking").click()
        first.wait_for_url(re.compile(r"/reservations\?done=cancelled"))

        second.goto(base + "/waitlist")
        assert "offered" in second.locator("#waitlist").inner_text()
        found += check(second, "waitlist-offered", "360")
        second.get_by_role("button", name="Accept").click()
        second.wait_for_url(re.compile(r"/waitlist\?done=accept"))
        assert second.get_by_role("status").inner_text() == "Booked: the place is yours."
        second.goto(base + "/reservations")
        assert court in second.locator("section[aria-labelledby=up-h] ul.bookings").inner_text()

        # The manager's queue and the admins' webhooks page.
        third = browser.new_context(viewport=PHONE, locale="en-GB").new_page()
        sign_in(third, base, manager.email, manager_pw)
        third.goto(base + "/manage/waitlist")
        found += check(third, "waitlist-queues", "360")
        third.locator("#queues a").first.click()
        third.wait_for_url(re.compile(r"/manage/waitlist/"))
        found += check(third, "waitlist-queue", "360")
        fourth = browser.new_context(viewport=PHONE, locale="en-GB").new_page()
        sign_in(fourth, base, admin.email, admin_pw)
        fourth.goto(base + "/admin/webhooks")
        fourth.fill("#url", "https://hooks.example/in")
        fourth.get_by_role("button", name="Add", exact=True).click()
        fourth.wait_for_load_state()
        assert fourth.locator("#signing-secret").inner_text().startswith("whsec_")
        found += check(fourth, "admin-webhooks", "360")
    if backend != "sqlite":
        found = []  # the markup does not depend on the database: axe's findings count on SQLite
    assert not found, "\n".join(found)
