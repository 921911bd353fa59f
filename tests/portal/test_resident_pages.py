"""Residents' pages over the real services: find a slot, book once for a form sent twice, see,
reschedule, duplicate and cancel; refusals in words next to the field."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from sqlmodel import col, select

from bms.models import Reservation
from core.i18n import translator

pytestmark = pytest.mark.usefixtures("example_site")

HTML = {"Accept": "text/html", "Accept-Language": "en"}


def _sign_in(client, make_user):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    r = client.post("/login", data={"email": user.email, "password": password}, follow_redirects=False)
    assert r.status_code == 303
    return user


def _first_slot(client, venue: str, kind: str | None = None) -> str:
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    page = client.get("/book", params={"venue": venue, "day": day, **({"kind": kind} if kind else {})}, headers=HTML)
    assert page.status_code == 200
    links = re.findall(r'href="(/book/new\?[^"]+)"', page.text)
    assert links, "no bookable slot"
    return links[len(links) // 2].replace("&amp;", "&")  # midday: moving it an hour stays on that day


def _form(client, link: str) -> dict[str, str]:
    page = client.get(link, headers=HTML)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    minutes = re.search(r'<option value="(\d+)" selected', page.text)
    assert minutes is not None
    return {**fields, "minutes": minutes.group(1)}


def test_book_twice_sent_books_once_then_cancel(client, engine, make_user):
    user = _sign_in(client, make_user)
    link = _first_slot(client, "sports", "court")
    assert parse_qs(urlparse(link).query)["resource"][0] in ("court-1", "court-2")
    form = _form(client, link)
    first = client.post("/book/new", data=form, follow_redirects=False)
    again = client.post("/book/new", data=form, follow_redirects=False)  # a double click
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    with engine.connect() as conn:
        rows = conn.execute(select(Reservation.id).where(col(Reservation.planner_id) == user.id)).all()
    assert len(rows) == 1
    rid = rows[0][0]
    mine = client.get(first.headers["location"], headers=HTML)
    assert f'id="r{rid}"' in mine.text and "Booked." in mine.text
    # The slot now shows as mine on the calendar, not as a link.
    start = parse_qs(urlparse(link).query)["start"][0]
    assert start not in client.get(link.split("?")[0].replace("/book/new", "/book"), params={"venue": "sports"}).text
    assert client.get(f"/reservations/{rid}/cancel", headers=HTML).status_code == 200
    done = client.post(f"/reservations/{rid}/cancel", data={"reason": "rain"}, follow_redirects=False)
    assert done.status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(Reservation.status).where(col(Reservation.id) == rid)).scalar_one() == "cancelled"


def test_a_refusal_is_shown_in_words_next_to_its_field(client, make_user):
    _sign_in(client, make_user)
    form = _form(client, _first_slot(client, "sports", "court"))
    form["beneficiaries"] = "nobody-here@example.com"
    r = client.post("/book/new", data=form, headers=HTML)
    assert r.status_code == 422
    assert 'id="beneficiaries-error"' in r.text and "is not a resident of this site" in r.text
    assert 'aria-invalid="true" aria-describedby="beneficiaries-error"' in r.text
    # French: the same refusal in French, next to the same field.
    r = client.post("/book/new", data=form, headers={**HTML, "Accept-Language": "fr"})
    assert translator("fr")("Someone you named is not a resident of this site.") in r.text


def test_reschedule_and_duplicate_through_the_services(client, engine, make_user):
    _sign_in(client, make_user)
    form = _form(client, _first_slot(client, "garage", "parking"))
    assert client.post("/book/new", data=form, follow_redirects=False).status_code == 303
    with engine.connect() as conn:
        r = conn.execute(select(Reservation).order_by(col(Reservation.id).desc())).first()
    page = client.get(f"/reservations/{r.id}/reschedule", headers=HTML)
    values = dict(re.findall(r'<input id="(date|start|end)" name="\w+" type="\w+" required value="([^"]*)"', page.text))
    start = datetime.fromisoformat(f"{values['date']}T{values['start']}")
    moved = {"date": values["date"], "start": (start - timedelta(hours=1)).strftime("%H:%M"), "end": values["start"]}
    assert client.post(f"/reservations/{r.id}/reschedule", data=moved, follow_redirects=False).status_code == 303
    # A time off the grid is refused with its reason next to the start field.
    bad = client.post(f"/reservations/{r.id}/reschedule", data={**moved, "start": "03:17"}, headers=HTML)
    assert bad.status_code == 422 and 'id="start-error"' in bad.text
    copy_day = (start + timedelta(days=7)).date().isoformat()
    copied = client.post(f"/reservations/{r.id}/duplicate", data={"date": copy_day}, follow_redirects=False)
    assert copied.status_code == 303
    mine = client.get("/reservations", headers=HTML).text
    assert mine.count("Visitor parking spaces") >= 2


def test_pages_need_a_session_and_hide_others_bookings(client, make_user):
    assert client.get("/book", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/reservations", follow_redirects=False).headers["location"] == "/login"
    _sign_in(client, make_user)
    assert client.get("/reservations/999999/cancel", headers=HTML).status_code == 404


def test_a_weekly_series_one_occurrence_moved_then_cancelled_from_the_third(client, engine, make_user):
    user = _sign_in(client, make_user)
    form = _form(client, _first_slot(client, "garage", "parking"))
    r = client.post("/book/new", data={**form, "repeat": "1", "count": "4"}, follow_redirects=False)
    assert r.status_code == 303 and "done=series" in r.headers["location"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Reservation.id, Reservation.series_id, Reservation.start)
            .where(col(Reservation.planner_id) == user.id)
            .order_by(col(Reservation.start))
        ).all()
    assert len(rows) == 4 and len({s for _, s, _ in rows}) == 1
    assert [(b[2] - a[2]).days for a, b in itertools.pairwise(rows)] in ([7, 7, 7], [6, 7, 7], [7, 6, 7])
    # Move the second occurrence one hour earlier: it leaves the series' rule, stays in the series.
    second = rows[1][0]
    page = client.get(f"/reservations/{second}/reschedule", headers=HTML)
    values = dict(re.findall(r'<input id="(date|start|end)" name="\w+" type="\w+" required value="([^"]*)"', page.text))
    start = datetime.fromisoformat(f"{values['date']}T{values['start']}")
    moved = {"date": values["date"], "start": (start - timedelta(hours=1)).strftime("%H:%M"), "end": values["start"]}
    assert client.post(f"/reservations/{second}/reschedule", data=moved, follow_redirects=False).status_code == 303
    # Every occurrence one hour later; the moved one keeps its own time.
    with engine.connect() as conn:
        before = dict(
            conn.execute(
                select(Reservation.id, Reservation.start).where(col(Reservation.series_id) == rows[0][1])
            ).all()
        )
    page = client.get(f"/series/{rows[0][1]}/edit", params={"reservation": rows[2][0]}, headers=HTML)
    assert page.status_code == 200
    later = {
        "start": (start + timedelta(hours=1)).strftime("%H:%M"),
        "end": (start + timedelta(hours=2)).strftime("%H:%M"),
    }
    r = client.post(
        f"/series/{rows[0][1]}/edit",
        data={"reservation": str(rows[2][0]), "scope": "all", **later},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    with engine.connect() as conn:
        after = conn.execute(
            select(Reservation.start, Reservation.detached)
            .where(col(Reservation.series_id) == rows[0][1], col(Reservation.status) == "confirmed")
            .order_by(col(Reservation.start))
        ).all()
    assert len(after) == 4
    assert sorted(a for a, d in after if not d) == sorted(
        t + timedelta(hours=1) for i, t in before.items() if i != second
    )
    assert [a for a, d in after if d] == [before[second]]  # moved on its own earlier: left alone
    # Cancel from the third on: the first two stay.
    third, series_id = rows[2][0], rows[2][1]
    assert client.get(f"/series/{series_id}/cancel", params={"reservation": third}, headers=HTML).status_code == 200
    r = client.post(f"/series/{series_id}/cancel", data={"reservation": str(third)}, follow_redirects=False)
    assert r.status_code == 303
    with engine.connect() as conn:
        statuses = conn.execute(
            select(Reservation.id, Reservation.status, Reservation.detached)
            .where(col(Reservation.series_id) == series_id)
            .order_by(col(Reservation.start))
        ).all()
    assert [s for _, s, _ in statuses] == ["confirmed", "confirmed", "cancelled", "cancelled"]
    assert [d for i, _, d in statuses if i == second] == [True]


def test_add_to_calendar_gives_the_booking_as_ics(client, engine, make_user):
    _sign_in(client, make_user)
    form = _form(client, _first_slot(client, "sports", "court"))
    client.post("/book/new", data=form)
    with engine.connect() as conn:
        rid = conn.execute(select(Reservation.id).order_by(col(Reservation.id).desc())).scalar_one()
    assert f"/reservations/{rid}/calendar.ics" in client.get("/reservations", headers=HTML).text
    ics = client.get(f"/reservations/{rid}/calendar.ics")
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert "BEGIN:VEVENT" in ics.text and "Tennis court" in ics.text
