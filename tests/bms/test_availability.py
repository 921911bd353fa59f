from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import delete

from bms import availability, service
from bms.context import load_resource
from bms.models import Reservation
from core import auth
from core.db import read_session, write_session
from core.errors import AppError
from core.models import User
from tests.bms.conftest import PARIS, book, local


def _slots(client, who, key, start, end):
    r = client.get(
        f"/api/v1/resources/{key}/availability",
        params={"from": start.isoformat(), "to": end.isoformat()},
        headers=who.headers,
    )
    assert r.status_code == 200, r.text
    return {datetime.fromisoformat(s["start"]): s for s in r.json()["slots"]}


def test_exclusive_slots_free_and_full(client, people):
    day = local(5, 0)
    book(client, people["alice"], "p-court", day.replace(hour=10), day.replace(hour=11))
    slots = _slots(client, people["carol"], "p-court", day, day + timedelta(days=1))
    assert len(slots) == 48
    assert (
        slots[day.replace(hour=10)]["status"] == "full" and slots[day.replace(hour=10, minute=30)]["status"] == "full"
    )
    assert slots[day.replace(hour=11)]["status"] == "free" and slots[day.replace(hour=9, minute=30)]["status"] == "free"
    assert slots[day.replace(hour=10)]["local_start"].startswith(day.date().isoformat() + "T10:00:00")


def test_buffer_blocks_neighbouring_slots(client, people):
    day = local(5, 0)
    book(client, people["alice"], "p-court-b", day.replace(hour=10), day.replace(hour=11))
    slots = _slots(client, people["carol"], "p-court-b", day.replace(hour=8), day.replace(hour=13))
    status = {k.astimezone(PARIS).strftime("%H:%M"): v["status"] for k, v in slots.items()}
    assert status["09:00"] == "free" and status["09:30"] == "full"  # its buffer would reach 10:00
    assert status["11:00"] == "full" and status["11:30"] == "free"  # the booking's own buffer


def test_pool_and_capacity_are_limited_then_full(client, people):
    s = local(6, 9)
    for _ in range(3):
        book(client, people["carol"], "p-pool", s, s + timedelta(hours=1))
    slot = _slots(client, people["carol"], "p-pool", s, s + timedelta(minutes=30))[s]
    assert slot["status"] == "limited" and slot["available"] == 2
    book(client, people["carol"], "p-class", s, s + timedelta(hours=1), places=12)
    assert _slots(client, people["carol"], "p-class", s, s + timedelta(minutes=30))[s]["status"] == "full"


def test_closed_hours_and_bad_ranges(client, people):
    monday = local(0, 0)
    monday += timedelta(days=(7 - monday.weekday()) % 7 or 7)
    slots = _slots(client, people["alice"], "p-club", monday, monday + timedelta(days=1))
    hours = sorted({k.astimezone(PARIS).hour for k in slots})
    assert hours == [8, 9, 10, 11, 14, 15, 16, 17]
    r = client.get(
        "/api/v1/resources/p-club/availability",
        headers=people["alice"].headers,
        params={"from": monday.isoformat(), "to": (monday + timedelta(days=60)).isoformat()},
    )
    assert r.status_code == 422 and r.json()["code"] == "range_too_long"
    r = client.get(
        "/api/v1/resources/p-club/availability",
        headers=people["alice"].headers,
        params={"from": "2027-01-01T00:00:00", "to": "2027-01-02T00:00:00"},
    )
    assert r.status_code == 422


def test_venue_day_view(client, people):
    d = local(7, 0)
    book(client, people["alice"], "p-court", d.replace(hour=9), d.replace(hour=10))
    r = client.get(
        "/api/v1/venues/p-sports/availability", params={"date": d.date().isoformat()}, headers=people["carol"].headers
    )
    assert r.status_code == 200
    by_key = {x["resource"]: x for x in r.json()}
    assert set(by_key) == {"p-court", "p-court-b", "p-club"}
    court = {datetime.fromisoformat(s["start"]): s["status"] for s in by_key["p-court"]["slots"]}
    assert court[d.replace(hour=9)] == "full"
    assert (
        client.get(
            "/api/v1/venues/p-sports/availability", params={"date": d.date().isoformat()}, headers=people["ny"].headers
        ).status_code
        == 404
    )


# ---------------------------------------------------------------- property-based

BASE = datetime(2027, 6, 7, 0, 0, tzinfo=UTC)
NOW = BASE - timedelta(days=1)
BUFFER = timedelta(minutes=30)  # p-hall


def _blocks(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] + BUFFER and b[0] < a[1] + BUFFER


requests = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 6)).map(
        lambda t: (BASE + timedelta(minutes=30 * t[0]), BASE + timedelta(minutes=30 * (t[0] + t[1])))
    ),
    min_size=1,
    max_size=12,
)


def test_overlap_and_availability_match_a_brute_force_model(engine, people):
    with read_session(engine) as s:
        carol = auth.load_principal(s, s.get(User, people["carol"].id))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(requests)
    def check(reqs):
        with write_session(engine) as s:
            s.exec(delete(Reservation))
        accepted: list[tuple[datetime, datetime]] = []
        for start, end in reqs:
            expect_ok = not any(_blocks((start, end), a) for a in accepted)
            try:
                with write_session(engine) as s:
                    service.create(
                        s, carol, service.ReservationCreate(resource="p-hall", start=start, end=end), now=NOW
                    )
                ok = True
            except AppError as exc:
                assert exc.code == "slot_taken", exc.code
                ok = False
            assert ok == expect_ok, (start, end, accepted)
            if ok:
                accepted.append((start, end))
        with read_session(engine) as s:
            ctx = load_resource(s, "p-hall")
            got = availability.resource_availability(s, ctx, BASE - timedelta(hours=2), BASE + timedelta(hours=26))
        for slot in got.slots:
            taken = any(_blocks((slot.start, slot.end), a) for a in accepted)
            assert slot.status == ("full" if taken else "free"), (slot, accepted)

    check()
