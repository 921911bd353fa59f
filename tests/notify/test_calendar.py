"""Calendars: one booking's .ics (stable UID, SEQUENCE, STATUS:CANCELLED, the site's VTIMEZONE),
a person's feed behind a revocable token, a resource's feed for its managers."""

from __future__ import annotations

from datetime import timedelta

from icalendar import Calendar

from tests.notify.conftest import book, local
from tests.notify.ics_check import check_rfc5545


def _event(raw: bytes):
    check_rfc5545(raw)
    [ev] = Calendar.from_ical(raw).walk("VEVENT")
    return ev


def test_reservation_ics_follows_changes_and_cancellation(client, people):
    alice = people["alice"]
    start = local(20, 18)
    rid = book(client, alice, "p-court", start, start + timedelta(hours=1)).json()["id"]
    url = f"/api/v1/reservations/{rid}/calendar.ics"
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    first = _event(r.content)
    assert int(first["SEQUENCE"]) == 0 and str(first["STATUS"]) == "CONFIRMED"

    later = start + timedelta(hours=2)
    r = client.post(
        f"/api/v1/reservations/{rid}/reschedule",
        json={"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()},
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    moved = _event(client.get(url, headers=alice.headers).content)
    assert moved["UID"] == first["UID"] and int(moved["SEQUENCE"]) == 1
    assert moved.decoded("DTSTART") == later

    assert client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=alice.headers).status_code == 200
    gone = _event(client.get(url, headers=alice.headers).content)
    assert gone["UID"] == first["UID"] and int(gone["SEQUENCE"]) == 2 and str(gone["STATUS"]) == "CANCELLED"

    assert client.get(url, headers=people["carol"].headers).status_code == 404  # not hers: not even its existence


def test_dst_booking_keeps_local_time_in_its_zone(client, people):
    """A summer booking (CEST) and a winter one (CET) both read back at 18:00 local, with Paris's
    VTIMEZONE carrying both its rules."""
    alice = people["alice"]
    winter = local(40, 18)
    book(client, alice, "p-court", winter, winter + timedelta(hours=1))
    start = local(220, 18)
    rid = book(client, alice, "p-court", start, start + timedelta(hours=1)).json()["id"]
    raw = client.get(f"/api/v1/reservations/{rid}/calendar.ics", headers=alice.headers).content
    ev = _event(raw)
    assert ev.decoded("DTSTART").hour == 18 and str(ev["DTSTART"].params["TZID"]) == "Europe/Paris"
    assert start.utcoffset() != winter.utcoffset()  # one of the two is in summer time
    tz = Calendar.from_ical(raw).walk("VTIMEZONE")[0]
    assert {c.name for c in tz.subcomponents} == {"STANDARD", "DAYLIGHT"}
    feed = client.get("/api/v1/resources/p-court/calendar.ics", headers=people["manager"].headers).content
    check_rfc5545(feed)
    assert sorted(e.decoded("DTSTART").hour for e in Calendar.from_ical(feed).walk("VEVENT")) == [18, 18]


def test_personal_feed_token_is_revocable(client, people):
    alice, bob = people["alice"], people["bob"]
    start = local(21, 9)
    book(client, alice, "p-court", start, start + timedelta(hours=1))
    book(client, bob, "p-court-b", start, start + timedelta(hours=1))
    r = client.post("/api/v1/calendar/feed", headers=alice.headers)
    assert r.status_code == 201
    path = r.json()["path"]
    feed = client.get(path)  # a calendar client sends no credentials: the token is the credential
    assert feed.status_code == 200
    check_rfc5545(feed.content)
    summaries = [str(e["SUMMARY"]) for e in Calendar.from_ical(feed.content).walk("VEVENT")]
    assert summaries == ["Court"]  # alice's booking only

    renewed = client.post("/api/v1/calendar/feed", headers=alice.headers).json()["path"]
    assert client.get(path).status_code == 401 and client.get(renewed).status_code == 200
    assert client.delete("/api/v1/calendar/feed", headers=alice.headers).status_code == 204
    gone = client.get(renewed)
    assert gone.status_code == 401 and gone.json()["code"] == "not_authenticated"
    assert client.get("/api/v1/calendar/feeds/" + "x" * 43 + ".ics").status_code == 401
    assert client.get("/api/v1/calendar/feeds/short.ics").status_code == 401


def test_resource_feed_for_its_managers_only(client, people):
    alice = people["alice"]
    start = local(22, 9)
    book(client, alice, "p-court", start, start + timedelta(hours=1))
    r = client.get("/api/v1/resources/p-court/calendar.ics", headers=people["manager"].headers)
    assert r.status_code == 200
    check_rfc5545(r.content)
    assert len(Calendar.from_ical(r.content).walk("VEVENT")) == 1
    url = "/api/v1/resources/p-court/calendar.ics"
    assert client.get(url, headers=alice.headers).status_code == 403
    assert client.get(url, headers=people["other_manager"].headers).status_code == 403
