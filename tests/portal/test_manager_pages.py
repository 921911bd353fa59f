"""The managers' pages over the real services: who sees what, and forms that change state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from fastapi.testclient import TestClient
from sqlmodel import select

from access import events
from access.protocol import DoorEvent
from core.db import read_session, utcnow, write_session
from core.models import Site
from portal.manager import StreamState, board_updates

pytestmark = pytest.mark.usefixtures("example_site")
PARIS = ZoneInfo("Europe/Paris")


def signed_in(app, user, password) -> TestClient:
    """A browser of its own: the cookie session, and this site as the origin of what it sends."""
    c = TestClient(app, headers={"Origin": "http://testserver", "Accept-Language": "en"})
    r = c.post("/login", data={"email": user.email, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def next_friday(days_ahead: int = 3, hour: int = 18) -> datetime:
    day = datetime.now(PARIS).date() + timedelta(days=days_ahead)
    while day.weekday() != 4:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=PARIS)


def request_party_room(c: TestClient, start: datetime, hours: int = 2) -> dict:
    """The party room is moderated by hand: a resident's booking waits for a manager."""
    r = c.post(
        "/api/v1/reservations",
        json={
            "resource": "party-room",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=hours)).isoformat(),
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    return r.json()


@pytest.fixture
def people(app, make_user):
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"}, name="Mona Manager")
    other, opw = make_user({"role": "venue_manager", "venue": "sports"}, name="Sam Sports")
    resident, rpw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Rita Resident")
    return {
        "manager": signed_in(app, manager, mpw),
        "other": signed_in(app, other, opw),
        "resident": signed_in(app, resident, rpw),
    }


def test_queue_shows_what_a_decision_needs_to_its_managers_only(client, people):
    req = request_party_room(people["resident"], next_friday())
    page = people["manager"].get("/moderation")
    assert page.status_code == 200
    assert "Party room" in page.text and "Rita Resident" in page.text
    assert "0 no-shows, 0 cancellations, 1 active bookings" in page.text
    assert "Every booking of this resource waits for a manager." in page.text  # the rule that queued it
    assert f'name="ids" value="{req["id"]}"' in page.text
    # Another venue's manager sees an empty queue; a resident is refused; a stranger signs in first.
    assert "Rita Resident" not in people["other"].get("/moderation").text
    assert people["resident"].get("/moderation").status_code == 403
    assert TestClient(client.app).get("/moderation", follow_redirects=False).headers["location"] == "/login"
    # Deciding another venue's request is 404, and changes nothing.
    r = people["other"].post(f"/moderation/{req['id']}/approve", data={})
    assert r.status_code == 404
    assert people["resident"].get(f"/api/v1/reservations/{req['id']}").json()["status"] == "pending"


def test_approve_reject_and_propose(people):
    resident, manager = people["resident"], people["manager"]
    first = request_party_room(resident, next_friday(3, 12))
    second = request_party_room(resident, next_friday(10, 12))
    third = request_party_room(resident, next_friday(17, 12))
    r = manager.post(f"/moderation/{first['id']}/approve", data={"note": "enjoy"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/moderation?done=approved"
    assert resident.get(f"/api/v1/reservations/{first['id']}").json()["status"] == "confirmed"
    # A rejection needs a reason: the form says which field, and nothing changes.
    r = manager.post(f"/moderation/{second['id']}/reject", data={"reason": ""})
    assert r.status_code == 422 and "reason:" in r.text
    assert resident.get(f"/api/v1/reservations/{second['id']}").json()["status"] == "pending"
    r = manager.post(f"/moderation/{second['id']}/reject", data={"reason": "private event"}, follow_redirects=False)
    assert r.status_code == 303
    body = resident.get(f"/api/v1/reservations/{second['id']}").json()
    assert body["status"] == "rejected" and body["status_reason"] == "private event"
    # Approve with a change: times read in the site's zone; the request stays pending with the offer.
    start = next_friday(17, 14)
    r = manager.post(
        f"/moderation/{third['id']}/propose",
        data={
            "start": start.strftime("%Y-%m-%dT%H:%M"),
            "end": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            "reason": "the morning is taken by cleaning",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = manager.get("/moderation").text
    assert "the morning is taken by cleaning" in page
    assert "Your proposal" in page
    # A decision on a version the manager did not see is refused.
    r = manager.post(f"/moderation/{third['id']}/approve", data={"version": "2000-01-01T00:00:00+00:00"})
    assert r.status_code == 409 and "changed since you saw it" in r.text


def test_bulk_decisions_each_on_its_own(people):
    resident, manager = people["resident"], people["manager"]
    a = request_party_room(resident, next_friday(3, 10))
    b = request_party_room(resident, next_friday(10, 10))
    r = manager.post("/moderation/bulk", data={"ids": [a["id"], b["id"]], "action": "reject", "reason": ""})
    assert r.status_code == 422 and "a rejection needs a reason" in r.text
    r = manager.post(
        "/moderation/bulk",
        data={"ids": [a["id"], b["id"]], "action": "reject", "reason": "closed"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    for x in (a, b):
        assert resident.get(f"/api/v1/reservations/{x['id']}").json()["status"] == "rejected"


def test_rules_form_patches_the_resource_and_reports_field_errors(people):
    manager = people["manager"]
    page = manager.get("/manage/resources/party-room")
    assert page.status_code == 200 and 'value="120"' in page.text  # its own min_minutes
    form = {
        "slot_minutes": "30",
        "min_minutes": "60",
        "max_minutes": "",
        "moderation": "manual",
        "hours_fri": "09:00-23:00",
    }
    r = manager.post("/manage/resources/party-room/rules", data=form, follow_redirects=False)
    assert r.status_code == 303
    rules = manager.get("/api/v1/resources/party-room").json()["rules"]
    assert rules["slot_minutes"] == 30 and rules["min_minutes"] == 60
    assert rules["opening_hours"] == {"fri": ["09:00-23:00"]}
    assert rules.get("max_minutes") != 480  # emptied: the venue's and site's value again
    r = manager.post("/manage/resources/party-room/rules", data={**form, "hours_sat": "25:00-26:00"})
    assert r.status_code == 422 and "opening_hours" in r.text
    r = manager.post("/manage/resources/party-room/rules", data={**form, "slot_minutes": "2"})
    assert r.status_code == 422 and "slot_minutes:" in r.text
    # Not theirs: the sports manager is refused, the rules stay.
    assert people["other"].get("/manage/resources/party-room").status_code in (403, 404)
    r = people["other"].post("/manage/resources/party-room/rules", data={"slot_minutes": "15"})
    assert r.status_code in (403, 404)
    assert manager.get("/api/v1/resources/party-room").json()["rules"]["slot_minutes"] == 30


def test_blackouts_are_added_in_local_time_and_removed(people):
    manager = people["manager"]
    r = manager.post(
        "/manage/resources/meeting-room/blackouts",
        data={"start": "2027-03-01T08:00", "end": "2027-03-01T12:00", "reason": "painting"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    blackouts = manager.get("/api/v1/resources/meeting-room").json()["rules"]["blackouts"]
    assert {"start": "2027-03-01T08:00:00+01:00", "end": "2027-03-01T12:00:00+01:00", "reason": "painting"} in [
        {**b, "start": datetime.fromisoformat(b["start"]).astimezone(PARIS).isoformat()} for b in blackouts
    ]
    r = manager.post(
        "/manage/resources/meeting-room/blackouts", data={"start": "2027-03-01T12:00", "end": "2027-03-01T08:00"}
    )
    assert r.status_code == 422 and "after its start" in r.text
    assert "painting" in manager.get("/manage/resources/meeting-room").text
    r = manager.post("/manage/resources/meeting-room/blackouts/0/delete", follow_redirects=False)
    assert r.status_code == 303
    assert "painting" not in manager.get("/manage/resources/meeting-room").text


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def test_venue_documents_upload_list_and_remove(people):
    manager = people["manager"]
    assert manager.get("/manage").status_code == 200
    r = manager.post(
        "/manage/venues/common-rooms/documents",
        files={"file": ("house-rules.pdf", PDF, "application/pdf")},
        data={"kind": "house_rules", "title": "House rules"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = manager.get("/manage/venues/common-rooms").text
    assert "House rules" in page
    r = manager.post(
        "/manage/venues/common-rooms/documents", files={"file": ("x.exe", b"MZ\x90\x00", "application/octet-stream")}
    )
    assert r.status_code in (415, 422) and "file" in r.text.lower()
    assert people["other"].get("/manage/venues/common-rooms").status_code == 404
    doc_id = int(page.split("/api/v1/moderation/documents/")[1].split("/")[0])
    r = people["other"].post(f"/manage/documents/{doc_id}/delete")
    assert r.status_code in (403, 404)
    r = manager.post(
        f"/manage/documents/{doc_id}/delete", data={"back": "/manage/venues/common-rooms"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "House rules" not in manager.get("/manage/venues/common-rooms").text


def test_doors_board_names_local_dates_and_filter(engine, people, make_user, app):
    manager, pw = make_user({"role": "venue_manager", "venue": "sports"}, name="Marc")
    c = signed_in(app, manager, pw)
    at = datetime(2026, 7, 1, 10, 30, 5, tzinfo=ZoneInfo("UTC"))
    with write_session(engine) as s:
        events.record(s, DoorEvent("courts-ctl", "denied", "0BADC0DE", 1, at, {}))
        events.record(s, DoorEvent("courts-ctl", "granted", "0BADC0DF", 1, at + timedelta(seconds=1), {}))
    page = c.get("/doors").text
    assert "Jul 1, 2026, 12:30:05" in page  # Paris summer time, with its date
    assert "Tennis courts gate" in page and "Tennis court 1" in page  # door and resource names
    assert 'data-door="court-gate"' in page
    assert "0BADC0DE" in page and "0BADC0DF" in page
    only_denied = c.get("/doors", params={"kind": "denied"}).text
    assert "0BADC0DE" in only_denied and "0BADC0DF" not in only_denied
    assert people["resident"].get("/doors").status_code == 403
    assert people["resident"].get("/doors/stream").status_code == 403  # the stream answers staff only
    assert TestClient(app).get("/doors/stream").status_code == 401


def test_stream_updates_carry_new_events_and_state_changes(engine, make_user):
    from sqlmodel import select

    from access.models import Controller
    from core.auth import load_principal
    from core.models import User

    manager, _ = make_user({"role": "venue_manager", "venue": "sports"})
    with read_session(engine) as s:
        principal = load_principal(s, s.get(User, manager.id))
    state = StreamState(floor=0, controllers={})
    first = board_updates(engine, principal, "fr", state)
    assert [u["event"] for u in first] == ["controller"]  # courts-ctl only: Marc's doors
    assert board_updates(engine, principal, "fr", state) == []
    with write_session(engine) as s:
        events.record(s, DoorEvent("courts-ctl", "denied", "0BADC0DE", 1, utcnow(), {}))
        events.record(s, DoorEvent("entrance-ctl", "denied", "0BADC0DF", 1, utcnow(), {}))  # not Marc's door
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        ctl.state, ctl.last_seen = "online", utcnow()
        s.add(ctl)
    news = board_updates(engine, principal, "fr", state)
    kinds = [u["event"] for u in news]
    assert kinds == ["door", "controller"]
    row = json.loads(news[0]["data"])
    assert row["door"] == "Tennis courts gate" and row["who"] == "0BADC0DE"
    with read_session(engine) as s:
        zone = ZoneInfo(s.exec(select(Site.timezone)).first())
    month = format_date(utcnow().astimezone(zone), "MMM", locale="fr")  # e.g. "nov.", "déc."
    assert f" {month} " in row["at"]  # the viewer's language, the site's zone
    assert int(news[0]["id"]) in state.sent
    assert board_updates(engine, principal, "fr", state) == []


def past_booking(
    engine, user_id: int, resource_key: str, start: datetime, hours: float, status: str, places: int = 1
) -> int:
    """A booking of last week, written as the jobs leave it (completed, no-show, cancelled): the
    API refuses times in the past, and the reports only read."""
    from bms.models import Reservation, Resource, ResourceUnit

    end = start + timedelta(hours=hours)
    with write_session(engine) as s:
        res = s.exec(select(Resource).where(Resource.key == resource_key)).one()
        unit = s.exec(select(ResourceUnit).where(ResourceUnit.resource_id == res.id)).first()
        r = Reservation(
            resource_id=res.id,
            unit_id=unit.id,
            planner_id=user_id,
            start=start,
            end=end,
            block_start=start,
            block_end=end,
            access_start=start,
            access_end=end,
            status=status,
            places=places,
            created_at=start - timedelta(days=2),
            updated_at=end,
        )
        s.add(r)
        s.flush()
        return r.id


def days_ago(n: int, hour: int) -> datetime:
    day = datetime.now(PARIS).date() - timedelta(days=n)
    return datetime(day.year, day.month, day.day, hour, tzinfo=PARIS)


def test_reports_occupancy_rates_lead_time_as_pictures_and_csv(engine, people, make_user, app):
    import csv
    import io

    from sqlalchemy import update

    from bms.models import Reservation

    manager, pw = make_user({"role": "venue_manager", "venue": "sports"})
    sports = signed_in(app, manager, pw)
    resident, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    first = days_ago(4, 10)  # four bookings at 10:00 on four days, all within the last week
    past_booking(engine, resident.id, "court-1", first, 2, "completed")
    past_booking(engine, resident.id, "court-1", days_ago(3, 10), 1, "no_show")
    past_booking(engine, resident.id, "court-1", days_ago(2, 10), 1, "cancelled")
    past_booking(engine, resident.id, "court-1", days_ago(1, 10), 1, "confirmed")
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[first.weekday()]

    page = sports.get("/reports", params={"weeks": 1})
    assert page.status_code == 200
    assert page.text.count("<img") >= 4 and 'alt="Heat map of the occupancy of Tennis court 1' in page.text
    rows = list(csv.reader(io.StringIO(sports.get("/reports/sports/occupancy.csv", params={"weeks": 1}).text)))
    cell = {(r[0], r[1], r[2]): r for r in rows[2:]}
    assert float(cell[("court-1", day, "10")][5]) == 1.0 and float(cell[("court-1", day, "11")][5]) == 1.0
    assert float(cell[("court-1", day, "12")][5]) == 0.0 and float(cell[("court-2", day, "10")][5]) == 0.0
    rows = list(csv.reader(io.StringIO(sports.get("/reports/sports/outcomes.csv", params={"weeks": 1}).text)))
    court1 = next(r for r in rows if r[0] == "court-1")
    assert court1[1:4] == ["4", "1", "1"] and float(court1[4]) == 0.25 and float(court1[5]) == 0.25
    # A period that ends before those days has none of them.
    earlier = sports.get("/reports/sports/outcomes.csv", params={"weeks": 1, "end": days_ago(5, 0).date().isoformat()})
    assert next(r for r in csv.reader(io.StringIO(earlier.text)) if r[0] == "court-1")[1] == "0"
    busiest = list(csv.reader(io.StringIO(sports.get("/reports/sports/busiest-hours.csv", params={"weeks": 1}).text)))
    assert dict((r[0], r[1]) for r in busiest[2:])["10"] == "3.0"  # the cancelled one held nothing

    # Charts are SVG drawn here: no script, nothing fetched from elsewhere, a CSP of their own.
    for chart, extra in (
        ("occupancy", {"resource": "court-1"}),
        ("outcomes", {}),
        ("lead-time", {}),
        ("busiest-hours", {}),
    ):
        r = sports.get(f"/reports/sports/{chart}.svg", params={"weeks": 1, **extra})
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml"), chart
        assert b"<script" not in r.content and b"https://" not in r.content, chart
        assert "script" not in r.headers["content-security-policy"]

    # Lead time: a request made three hours before its decision.
    req = request_party_room(people["resident"], next_friday())
    with write_session(engine) as s:
        s.exec(update(Reservation).where(Reservation.id == req["id"]).values(created_at=utcnow() - timedelta(hours=3)))
    assert people["manager"].post(f"/moderation/{req['id']}/approve", follow_redirects=False).status_code == 303
    rows = list(csv.reader(io.StringIO(people["manager"].get("/reports/common-rooms/lead-time.csv").text)))
    party = next(r for r in rows if r[0] == "party-room")
    assert party[1:4] == ["1", "0", "0"] and 179 <= float(party[4]) <= 182

    # Other venues are not theirs: 404; residents: 403.
    assert sports.get("/reports/common-rooms/outcomes.csv").status_code == 404
    assert sports.get("/reports", params={"venue": "common-rooms"}).status_code == 404
    assert people["resident"].get("/reports").status_code == 403
    assert people["resident"].get("/reports/sports/outcomes.svg").status_code == 403
