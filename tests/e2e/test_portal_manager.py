"""Managers' and admins' pages in a real browser, against a real server on 127.0.0.1: a request
approved in a second browser shows confirmed to the resident, the doors board follows its event
stream without a reload and without moving the focus, and axe-core finds nothing on any page."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bench.harness import serve
from tests.e2e.conftest import update_docs_screenshot

pytestmark = pytest.mark.usefixtures("example_site")
DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 900}


def sign_in(browser, base: str, user, password: str, viewport: dict = PHONE):
    context = browser.new_context(viewport=viewport, locale="en-GB")
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("#email", user.email)
    page.fill("#password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(base + "/")
    return context, page


def no_axe_violations(page) -> None:
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    assert violations == [], json.dumps(
        [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in violations], indent=1
    )


def fits_the_phone(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"], page.url


def party_room_request(page, base: str, weeks_ahead: int = 0, hour: int = 18) -> int:
    """A Friday evening in the party room, which a manager decides by hand."""
    day = datetime.now(ZoneInfo("Europe/Paris")).date() + timedelta(days=3, weeks=weeks_ahead)
    while day.weekday() != 4:
        day += timedelta(days=1)
    start = datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo("Europe/Paris"))
    r = page.request.post(
        base + "/api/v1/reservations",
        data={"resource": "party-room", "start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
        headers={"Origin": base},
    )
    assert r.status == 201, r.text()
    assert r.json()["status"] == "pending"
    return r.json()["id"]


def test_a_manager_approves_in_a_second_browser_and_the_resident_sees_it_confirmed(browser, app, make_user, tmp_path):
    resident, rpw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Rita Resident")
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"}, name="Mona Manager")
    with serve(app) as base:
        rctx, rpage = sign_in(browser, base, resident, rpw)
        rid = party_room_request(rpage, base)
        rpage.goto(base + "/reservations")
        assert "waiting for a manager" in rpage.locator(f"#r{rid}").inner_text()

        mctx, mpage = sign_in(browser, base, manager, mpw, DESKTOP)
        mpage.get_by_role("link", name="Moderation").click()
        mpage.wait_for_url(base + "/moderation")
        item = mpage.locator(f"#request-{rid}")
        assert "Rita Resident" in item.inner_text() and "Party room" in item.inner_text()
        no_axe_violations(mpage)
        mpage.screenshot(path=str(tmp_path / "moderation-desktop.png"), full_page=True)
        update_docs_screenshot(tmp_path / "moderation-desktop.png", "portal-moderation.png")
        mpage.set_viewport_size(PHONE)
        fits_the_phone(mpage)
        mpage.screenshot(path=str(tmp_path / "moderation-phone.png"), full_page=True)
        item.get_by_role("button", name="Approve", exact=True).click()
        mpage.wait_for_url(base + "/moderation?done=approved")
        assert mpage.get_by_role("status").first.inner_text() == "The request is approved."
        assert mpage.locator(f"#request-{rid}").count() == 0

        rpage.reload()
        row = rpage.locator(f"#r{rid}")
        assert "confirmed" in row.inner_text()
        rctx.close()
        mctx.close()


def test_the_doors_board_follows_its_stream_without_reload_or_focus_theft(browser, app, engine, make_user, tmp_path):
    from playwright.sync_api import expect

    from access import events
    from access.models import Controller
    from access.protocol import DoorEvent
    from core.db import utcnow, write_session

    manager, pw = make_user({"role": "venue_manager", "venue": "sports"}, name="Marc Manager")
    with write_session(engine) as s:
        events.record(s, DoorEvent("courts-ctl", "denied", "0BADC0DE", 1, utcnow() - timedelta(seconds=5), {}))
    with serve(app) as base:
        context, page = sign_in(browser, base, manager, pw)
        page.goto(base + "/doors")
        expect(page.locator("#live")).to_have_text(re.compile("^Live"))  # the stream is open
        page.evaluate("window.sameDocument = true")
        page.click("#f-q")
        page.keyboard.type("0bad")
        with write_session(engine) as s:
            wanted = events.record(s, DoorEvent("courts-ctl", "granted", "0BADF00D", 1, utcnow(), {}))
            other = events.record(s, DoorEvent("courts-ctl", "denied", "CAFE0001", 1, utcnow(), {}))
            ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
            ctl.state, ctl.last_seen = "online", utcnow()
            s.add(ctl)
        assert wanted is not None and other is not None
        page.wait_for_selector(f"#events tr[data-id='{other.id}']", state="attached", timeout=10_000)
        assert page.locator(f"#events tr[data-id='{wanted.id}']").is_visible()
        assert page.locator(f"#events tr[data-id='{other.id}']").is_hidden()  # the filter applies to news too
        assert "Tennis courts gate" in page.locator(f"#events tr[data-id='{wanted.id}']").inner_text()
        expect(page.locator('#controllers tr[data-key="courts-ctl"] .c-state')).to_have_text("online")
        assert page.evaluate("document.activeElement.id") == "f-q"  # the focus stayed in the filter field
        assert page.evaluate("window.sameDocument") is True  # no reload
        page.keyboard.type("f00d")  # still typing where it was
        assert page.input_value("#f-q") == "0badf00d"
        assert page.locator("#events tbody tr:not([hidden])").count() == 1
        fits_the_phone(page)
        no_axe_violations(page)
        page.screenshot(path=str(tmp_path / "doors-phone.png"), full_page=True)
        context.close()


def seed_history(engine, base: str, page, manager, resident) -> None:
    """Four weeks of the common rooms as the jobs leave them, and three requests decided after
    two, seven and fifteen hours: the report has something to draw."""
    from sqlalchemy import update

    from bms.models import Reservation
    from core.auth import load_principal
    from core.db import read_session, utcnow, write_session
    from core.models import User
    from moderation import service
    from tests.portal.test_manager_pages import days_ago, past_booking

    for d in range(1, 28):
        day = days_ago(d, 18)
        if day.weekday() < 5 and d % 3:
            status = "no_show" if d % 7 == 2 else "cancelled" if d % 5 == 0 else "completed"
            past_booking(engine, resident.id, "meeting-room", day, 2, status, places=4 + d % 8)
        if day.weekday() == 5:
            past_booking(engine, resident.id, "party-room", days_ago(d, 14), 8, "completed")
    with read_session(engine) as s:
        principal = load_principal(s, s.get(User, manager.id))
    for weeks, hours, action in ((1, 2, "approve"), (2, 7, "approve"), (3, 15, "reject")):
        rid = party_room_request(page, base, weeks_ahead=weeks, hour=12)
        with write_session(engine) as s:
            s.exec(
                update(Reservation).where(Reservation.id == rid).values(created_at=utcnow() - timedelta(hours=hours))
            )
        with write_session(engine) as s:
            if action == "approve":
                service.approve(s, principal, rid, service.Decision())
            else:
                service.reject(s, principal, rid, service.Rejection(reason="private event"))


def test_every_manager_and_admin_page_passes_axe_at_both_widths(browser, app, engine, make_user, tmp_path):
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"}, name="Mona Manager")
    admin, apw = make_user({"role": "admin"}, name="Ada Admin")
    resident, rpw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Rita Resident")
    with serve(app) as base:
        rctx, rpage = sign_in(browser, base, resident, rpw)
        party_room_request(rpage, base)
        seed_history(engine, base, rpage, manager, resident)
        rctx.close()
        pages = [
            (
                manager,
                mpw,
                [
                    "/moderation",
                    "/manage",
                    "/manage/venues/common-rooms",
                    "/manage/resources/party-room",
                    "/reports",
                    "/doors",
                ],
            ),
            (
                admin,
                apw,
                [
                    "/admin",
                    "/admin/users",
                    f"/admin/users/{resident.id}",
                    "/admin/sites",
                    "/admin/controllers",
                    "/admin/retention",
                ],
            ),
        ]
        for user, pw, paths in pages:
            context, page = sign_in(browser, base, user, pw)
            for path in paths:
                for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
                    page.set_viewport_size(viewport)
                    assert page.goto(base + path).status == 200, path
                    page.locator("details").evaluate_all("els => els.forEach(d => d.open = true)")
                    if size == "phone":
                        fits_the_phone(page)
                    no_axe_violations(page)
                    name = path.strip("/").replace("/", "-") or "home"
                    page.screenshot(path=str(tmp_path / f"{name}-{size}.png"), full_page=True)
            context.close()
        update_docs_screenshot(tmp_path / "reports-desktop.png", "portal-report.png")
        update_docs_screenshot(tmp_path / "doors-phone.png", "portal-doors.png")
