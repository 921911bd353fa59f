"""Hardening: bounded RRULE expansion, and beneficiaries limited to residents of the resource's site."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from bms import recurrence
from bms.models import Reservation, Series
from core.db import read_session
from core.errors import AppError
from tests.bms.conftest import book, local

# ---------------------------------------------------------------- series: bounded expansion


def _series(client, who, rule: str, start: datetime, **extra):
    body = {
        "resource": "p-class",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "rrule": rule,
        **extra,
    }
    return client.post("/api/v1/series", json=body, headers=who.headers)


def test_a_rule_with_no_occurrence_is_refused_at_once_and_writes_nothing(client, engine, people):
    started = time.monotonic()
    r = _series(client, people["alice"], "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", local(3, 18), conflict="skip")
    elapsed = time.monotonic() - started
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "rrule_empty"
    assert elapsed < 2, f"{elapsed:.1f} s"
    with read_session(engine) as s:
        assert s.exec(select(Series)).all() == [] and s.exec(select(Reservation)).all() == []


def test_rules_that_never_end_or_run_past_the_horizon_are_refused_at_once(client, people):
    for rule, code in [
        ("FREQ=WEEKLY", "rrule_too_long"),
        ("FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4;COUNT=3", "rrule_empty"),
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29", "rrule_too_long"),  # leap days only, for ever
        ("FREQ=DAILY", "too_many_occurrences"),
    ]:
        started = time.monotonic()
        r = _series(client, people["alice"], rule, local(3, 18))
        assert (r.status_code, r.json()["code"]) == (422, code), (rule, r.text)
        assert time.monotonic() - started < 2, rule


def test_a_weekly_rule_still_books_every_occurrence(client, engine, people):
    start = local(2, 19)
    r = _series(client, people["alice"], "FREQ=WEEKLY;COUNT=5", start)
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["booked"]) == 5 and body["skipped"] == []
    with read_session(engine) as s:
        rows = s.exec(select(Reservation).where(Reservation.series_id == body["series_id"])).all()
    assert sorted(x.start for x in rows) == [start + timedelta(weeks=i) for i in range(5)]


def test_expansion_is_right_and_bounded_in_any_year():
    start = datetime(2027, 2, 25, 19, 0)  # noqa: DTZ001 - a local wall time, as the service gives it
    assert recurrence.expand("FREQ=WEEKLY;BYDAY=TH;COUNT=3", start) == [start + timedelta(weeks=i) for i in range(3)]
    # A leap day a year ahead: found on the twin years, mapped back to its real year.
    leap = recurrence.expand("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=1", start)
    assert leap == [start.replace(year=2028, month=2, day=29)]
    started = time.monotonic()
    for year in (2026, 2096, 2099, 2399):  # around century years that are not leap years
        for rule in ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "FREQ=WEEKLY;BYMONTH=2;BYMONTHDAY=30;BYDAY=MO"):
            with pytest.raises(AppError) as info:
                recurrence.expand(rule, start.replace(year=year))
            assert info.value.code == "rrule_empty"
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- beneficiaries: same site only


def test_a_resident_cannot_give_access_to_a_resident_of_another_site(client, engine, people):
    start = local(3, 10)
    other_site = book(
        client, people["alice"], "p-court", start, start + timedelta(hours=1), beneficiaries=[people["ny"].id]
    )
    nobody = book(client, people["alice"], "p-court", start, start + timedelta(hours=1), beneficiaries=[987654])
    assert (other_site.status_code, other_site.json()["code"]) == (422, "unknown_beneficiary"), other_site.text
    assert (nobody.status_code, nobody.json()["code"]) == (422, "unknown_beneficiary")
    # The same answer whether the id exists or not: only the id given back differs.
    assert other_site.json()["message"].replace(str(people["ny"].id), "#") == nobody.json()["message"].replace(
        "987654", "#"
    )
    with read_session(engine) as s:
        assert s.exec(select(Reservation)).all() == []
    ok = book(client, people["alice"], "p-court", start, start + timedelta(hours=1), beneficiaries=[people["carol"].id])
    assert ok.status_code == 201, ok.text
    assert ok.json()["beneficiaries"] == [people["carol"].id]


def test_managers_and_admins_book_for_residents_of_the_site_only(client, people, admin_headers):
    start = local(3, 12)
    for n, headers in enumerate([people["manager"].headers, admin_headers]):
        s = start + timedelta(hours=2 * n)
        body = {"resource": "p-hall", "start": s.isoformat(), "end": (s + timedelta(hours=1)).isoformat()}
        refused = client.post(
            "/api/v1/reservations", json={**body, "beneficiaries": [people["ny"].id]}, headers=headers
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "unknown_beneficiary"), refused.text
        manager = client.post(
            "/api/v1/reservations", json={**body, "beneficiaries": [people["manager"].id]}, headers=headers
        )
        assert (manager.status_code, manager.json()["code"]) == (422, "unknown_beneficiary")  # not a resident
        ok = client.post("/api/v1/reservations", json={**body, "beneficiaries": [people["bob"].id]}, headers=headers)
        assert ok.status_code == 201, ok.text


def test_a_series_for_a_resident_of_another_site_is_refused(client, engine, people):
    r = _series(client, people["alice"], "FREQ=WEEKLY;COUNT=2", local(2, 9), beneficiaries=[people["ny"].id])
    assert (r.status_code, r.json()["code"]) == (422, "unknown_beneficiary"), r.text
    with read_session(engine) as s:
        assert s.exec(select(Series)).all() == []
