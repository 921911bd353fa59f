"""Series and DST, through the service layer with a controlled clock (the changes are months away)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from bms import recurrence, service
from bms.models import Reservation
from core import auth
from core.db import read_session, write_session
from core.errors import AppError
from core.models import User
from tests.bms.conftest import NEW_YORK, PARIS

NOW = datetime(2027, 2, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def who(engine, people):
    def _who(name: str) -> auth.Principal:
        with read_session(engine) as s:
            return auth.load_principal(s, s.get(User, people[name].id))

    return _who


def _create(engine, principal, **kw) -> recurrence.SeriesResult:
    with write_session(engine) as s:
        return recurrence.create_series(s, principal, recurrence.SeriesCreate(**kw), now=NOW)


def _occurrences(engine, series_id: int) -> list[Reservation]:
    with read_session(engine) as s:
        return list(
            s.exec(select(Reservation).where(Reservation.series_id == series_id).order_by(Reservation.start)).all()
        )


@pytest.mark.parametrize(("tz", "resource", "person"), [(PARIS, "p-class", "alice"), (NEW_YORK, "ny-court", "ny")])
def test_weekly_series_keeps_local_time_across_spring_and_autumn(engine, who, tz, resource, person):
    # 19:00-20:00 local every Thursday from late February for 40 weeks: crosses the March and
    # the October/November changes (Europe 28 Mar / 31 Oct 2027; US 14 Mar / 7 Nov 2027).
    start = datetime(2027, 2, 25, 19, 0, tzinfo=tz)
    res = _create(
        engine,
        who(person),
        resource=resource,
        start=start,
        end=start + timedelta(hours=1),
        rrule="FREQ=WEEKLY;BYDAY=TH;COUNT=40",
    )
    assert len(res.booked) == 40 and res.skipped == []
    occ = _occurrences(engine, res.series_id)
    locals_ = [(r.start.astimezone(tz).strftime("%a %H:%M"), r.end.astimezone(tz).strftime("%H:%M")) for r in occ]
    assert set(locals_) == {("Thu 19:00", "20:00")}
    offsets = {r.start.astimezone(tz).utcoffset() for r in occ}
    assert len(offsets) == 2  # both winter and summer time were crossed
    assert all(r.end - r.start == timedelta(hours=1) for r in occ)


def test_booking_across_the_autumn_change_has_its_real_duration(engine, who):
    now = datetime(2027, 10, 20, tzinfo=UTC)
    start = datetime(2027, 10, 30, 22, 0, tzinfo=PARIS)  # CEST, +02:00
    end = datetime(2027, 10, 31, 6, 0, tzinfo=PARIS)  # CET, +01:00
    with write_session(engine) as s:
        r = service.create(
            s, who("alice"), service.ReservationCreate(resource="p-class", start=start, end=end), now=now
        )
    assert r.end - r.start == timedelta(hours=9)  # 8 wall-clock hours, 9 real ones
    assert r.end.astimezone(PARIS).hour == 6


def test_occurrence_in_the_spring_gap_is_reported(engine, who):
    start = datetime(2027, 3, 21, 2, 30, tzinfo=PARIS)
    res = _create(
        engine,
        who("alice"),
        resource="p-class",
        start=start,
        end=start + timedelta(hours=1),
        rrule="FREQ=WEEKLY;COUNT=3",
        conflict="skip",
    )
    assert [s.occurrence for s in res.skipped] == ["2027-03-28T02:30:00"]
    assert res.skipped[0].code == "nonexistent_local_time" and len(res.booked) == 2


def test_conflict_policy_fail_writes_nothing_and_skip_books_the_rest(engine, who):
    start = datetime(2027, 3, 2, 18, 0, tzinfo=PARIS)
    with write_session(engine) as s:
        service.create(
            s,
            who("carol"),
            service.ReservationCreate(
                resource="p-court", start=start + timedelta(days=14), end=start + timedelta(days=14, hours=1)
            ),
            now=NOW,
        )
    with pytest.raises(AppError) as info:
        _create(
            engine,
            who("alice"),
            resource="p-court",
            start=start,
            end=start + timedelta(hours=1),
            rrule="FREQ=WEEKLY;COUNT=4",
        )
    assert info.value.code == "series_conflict"
    assert info.value.extra["occurrences"][0]["occurrence"] == "2027-03-16T18:00:00"
    with read_session(engine) as s:
        assert len(s.exec(select(Reservation)).all()) == 1
    res = _create(
        engine,
        who("alice"),
        resource="p-court",
        start=start,
        end=start + timedelta(hours=1),
        rrule="FREQ=WEEKLY;COUNT=4",
        conflict="skip",
    )
    assert len(res.booked) == 3 and res.skipped[0].code == "slot_taken"


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ("FREQ=WEEKLY;BYDAY=XX", "bad_rrule"),
        ("FREQ=HOURLY;COUNT=3", "bad_rrule"),
        ("FREQ=DAILY", "too_many_occurrences"),
        ("FREQ=DAILY;COUNT=400", "too_many_occurrences"),
        ("nonsense", "bad_rrule"),
        ("DTSTART:20270101T000000\nRRULE:FREQ=DAILY;COUNT=2", "bad_rrule"),
    ],
)
def test_bad_rules_are_422_and_write_nothing(engine, who, rule, code):
    start = datetime(2027, 3, 2, 18, 0, tzinfo=PARIS)
    with pytest.raises(AppError) as info:
        _create(engine, who("alice"), resource="p-class", start=start, end=start + timedelta(hours=1), rrule=rule)
    assert info.value.code == code and info.value.status == 422
    with read_session(engine) as s:
        assert s.exec(select(Reservation)).all() == []


def test_monthly_last_friday(engine, who):
    start = datetime(2027, 2, 26, 20, 0, tzinfo=PARIS)
    res = _create(
        engine,
        who("alice"),
        resource="p-class",
        start=start,
        end=start + timedelta(hours=2),
        rrule="FREQ=MONTHLY;BYDAY=-1FR;COUNT=4",
    )
    days = [r.start.astimezone(PARIS).date().isoformat() for r in _occurrences(engine, res.series_id)]
    assert days == ["2027-02-26", "2027-03-26", "2027-04-30", "2027-05-28"]


def test_series_edit_never_resurrects_or_overrides_detached_occurrences(engine, who):
    alice = who("alice")
    start = datetime(2027, 3, 2, 19, 0, tzinfo=PARIS)  # Tuesdays
    res = _create(
        engine, alice, resource="p-class", start=start, end=start + timedelta(hours=1), rrule="FREQ=WEEKLY;COUNT=6"
    )
    occ = _occurrences(engine, res.series_id)
    with write_session(engine) as s:
        service.cancel(s, alice, occ[1].id, "away", now=NOW)
        service.reschedule(
            s, alice, occ[2].id, occ[2].start + timedelta(hours=2), occ[2].end + timedelta(hours=2), now=NOW
        )
    # Move the whole series one hour earlier.
    with write_session(engine) as s:
        out = recurrence.update_series(
            s,
            alice,
            res.series_id,
            recurrence.SeriesUpdate(scope="all", start=start - timedelta(hours=1), end=start),
            now=NOW,
        )
    assert out.skipped == []
    after = {r.id: r for r in _occurrences(engine, res.series_id)}
    assert after[occ[1].id].status == "cancelled"  # not resurrected...
    assert not any(r.status == "confirmed" and r.start.date() == occ[1].start.date() for r in after.values())
    assert after[occ[2].id].start == occ[2].start + timedelta(hours=2)  # ...nor overridden
    for o in (occ[0], occ[3], occ[4], occ[5]):  # moved in place: same ids, new local time
        assert after[o.id].status == "confirmed"
        assert after[o.id].start.astimezone(PARIS).hour == 18
    assert len(after) == 6


def test_this_and_following_splits_the_series(engine, who):
    alice = who("alice")
    start = datetime(2027, 3, 4, 19, 0, tzinfo=PARIS)
    res = _create(
        engine, alice, resource="p-class", start=start, end=start + timedelta(hours=1), rrule="FREQ=WEEKLY;COUNT=6"
    )
    occ = _occurrences(engine, res.series_id)
    key = occ[3].occurrence_key
    with write_session(engine) as s:
        out = recurrence.update_series(
            s,
            alice,
            res.series_id,
            recurrence.SeriesUpdate(
                scope="following",
                from_occurrence=key,
                start=occ[3].start + timedelta(hours=1),
                end=occ[3].end + timedelta(hours=1),
            ),
            now=NOW,
        )
    assert out.series_id != res.series_id
    old = _occurrences(engine, res.series_id)
    new = _occurrences(engine, out.series_id)
    assert [r.id for r in old] == [o.id for o in occ[:3]]
    assert [r.start.astimezone(PARIS).hour for r in new] == [20, 20, 20]
    with write_session(engine) as s:
        cancelled = recurrence.cancel_series(s, alice, out.series_id, recurrence.SeriesCancel(reason="done"), now=NOW)
    assert len(cancelled.cancelled) == 3
    assert all(r.status == "cancelled" for r in _occurrences(engine, out.series_id))
    assert all(r.status == "confirmed" for r in _occurrences(engine, res.series_id))


def test_series_over_the_api(client, people):
    from tests.bms.conftest import local

    start = local(2, 19)
    r = client.post(
        "/api/v1/series",
        headers=people["alice"].headers,
        json={
            "resource": "p-class",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "rrule": "FREQ=WEEKLY;COUNT=3",
        },
    )
    assert r.status_code == 201, r.text
    sid = r.json()["series_id"]
    got = client.get(f"/api/v1/series/{sid}", headers=people["alice"].headers).json()
    assert len(got["occurrences"]) == 3
    assert client.get(f"/api/v1/series/{sid}", headers=people["carol"].headers).status_code == 404
    r = client.post(f"/api/v1/series/{sid}/cancel", json={"scope": "all"}, headers=people["alice"].headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = client.post(
        f"/api/v1/series/{sid}/cancel", json={"scope": "all", "reason": "x"}, headers=people["alice"].headers
    )
    assert len(r.json()["cancelled"]) == 3
