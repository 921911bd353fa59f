# ruff: noqa: F811 - fixtures imported from the booking and delivery tests
"""Completed bookings with a controlled clock: checked-in ones, and confirmed ones where no check-in
applies, become `completed` once their end, buffer and access window are over (audited, announced);
where check-in applies an unchecked booking is left to the no-show job. A site's follow-up goes to
the planner once, through the outbox, after its delay, in the planner's language."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlmodel import col, select, update

from bms.context import load_resource_by_id
from bms.models import Reservation
from bms.states import Status
from bms.status import set_status
from core.audit import SYSTEM, AuditEntry
from core.db import read_session, write_session
from core.models import User
from core.outbox import OutboxMessage
from schedules.clock import start_clock
from schedules.completion import FOLLOW_UP, complete_finished
from schedules.noshow import mark_no_shows
from tests.bms.conftest import book, local, people, sites  # noqa: F401 - fixtures reused
from tests.notify.conftest import deliver, mail_settings, smtp, worker  # noqa: F401 - fixtures reused
from tests.schedules.site_settings import reimport, resource


def _status(engine, rid: int) -> str:
    with read_session(engine) as s:
        r = s.get(Reservation, rid)
        assert r is not None
        return r.status


def _outbox(engine, kind: str) -> list[OutboxMessage]:
    with read_session(engine) as s:
        return list(s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == kind)).all())


def _check_in(engine, rid: int) -> None:
    with write_session(engine) as s:
        r = s.get(Reservation, rid)
        assert r is not None
        set_status(s, SYSTEM, r, load_resource_by_id(s, r.resource_id), Status.checked_in, "entered", r.start)


def test_checked_in_and_confirmed_complete_after_access_ends(client, engine, people):
    alice = people["alice"]
    start = local(2, 10)
    end = start + timedelta(hours=1)
    used = book(client, alice, "p-court", start, end).json()["id"]  # access until end + 5 min
    other = book(client, people["carol"], "p-class", start, end).json()["id"]
    _check_in(engine, used)

    assert complete_finished(engine, end - timedelta(minutes=1)) == 0
    assert complete_finished(engine, end + timedelta(minutes=1)) == 1  # p-class; p-court's door still open
    assert _status(engine, other) == "completed" and _status(engine, used) == "checked_in"
    assert complete_finished(engine, end + timedelta(minutes=6)) == 1
    assert _status(engine, used) == "completed"
    assert complete_finished(engine, end + timedelta(minutes=7)) == 0  # once

    with read_session(engine) as s:
        actions = s.exec(
            select(AuditEntry.object_id).where(col(AuditEntry.action) == "reservation.complete")
        ).all()
    assert sorted(int(a) for a in actions) == sorted([used, other])
    announced = [m.payload["reservation_id"] for m in _outbox(engine, "reservation.completed")]
    assert sorted(announced) == sorted([used, other])
    assert _outbox(engine, FOLLOW_UP) == []  # follow-ups are off unless the site turns them on


def test_where_check_in_applies_an_unchecked_booking_is_a_no_show_not_completed(client, engine, people, tmp_path):
    reimport(engine, tmp_path, lambda doc: resource(doc, "p-court")["access"].update(no_show_minutes=90))
    start = local(2, 10)
    end = start + timedelta(hours=1)
    rid = book(client, people["alice"], "p-court", start, end).json()["id"]
    assert complete_finished(engine, end + timedelta(minutes=10)) == 0
    assert _status(engine, rid) == "confirmed"
    assert mark_no_shows(engine, start + timedelta(minutes=91)) == 1
    assert _status(engine, rid) == "no_show"
    assert complete_finished(engine, end + timedelta(hours=3)) == 0


def test_follow_up_once_after_its_delay_in_the_planners_language(client, engine, people, tmp_path, smtp, worker):
    reimport(engine, tmp_path, lambda doc: doc["sites"][0]["defaults"].update(follow_up=True, follow_up_minutes=30))
    alice, bob = people["alice"], people["bob"]
    with write_session(engine) as s:
        chosen = {"locale_chosen": True} if hasattr(User, "locale_chosen") else {}  # her own choice
        s.exec(update(User).where(col(User.id) == alice.id).values(locale="fr", **chosen))
    start = local(2, 10)
    end = start + timedelta(hours=1)
    rid = book(client, alice, "p-class", start, end, beneficiaries=[bob.id]).json()["id"]
    assert complete_finished(engine, end + timedelta(minutes=1)) == 1
    assert complete_finished(engine, end + timedelta(minutes=40)) == 0
    [row] = _outbox(engine, FOLLOW_UP)
    assert row.payload["reservation_id"] == rid and row.payload["recipients"] == [alice.id]
    assert row.available_at == end + timedelta(minutes=30)

    deliver(worker)  # not yet: it waits for end + 30 min
    assert not [m for m in smtp.to(alice.email) if m["Subject"].startswith("How was it?")]
    with write_session(engine) as s:  # the clock reaches end + 30 min
        s.exec(update(OutboxMessage).where(col(OutboxMessage.id) == row.id).values(available_at=row.created_at))
    deliver(worker)
    [mail] = [m for m in smtp.to(alice.email) if m["Subject"] == "How was it? Class"]
    assert "est terminée" in mail.get_body(preferencelist=("plain",)).get_content()
    assert not [m for m in smtp.to(bob.email) if m["Subject"].startswith("How was it?")]  # the planner only


def test_two_sweeps_at_once_complete_each_booking_once(client, engine, people, tmp_path):
    reimport(engine, tmp_path, lambda doc: doc["sites"][0]["defaults"].update(follow_up=True))
    start = local(2, 10)
    ids = [
        book(client, people["alice"], "p-class", start + timedelta(hours=h), start + timedelta(hours=h, minutes=30))
        .json()["id"]
        for h in range(6)
    ]
    done: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        done.append(complete_finished(engine, start + timedelta(days=1), batch=2))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(done) == len(ids)
    assert {_status(engine, rid) for rid in ids} == {"completed"}
    assert sorted(m.payload["reservation_id"] for m in _outbox(engine, FOLLOW_UP)) == sorted(ids)


def test_the_clock_runs_the_completion_sweep(engine):
    clock = start_clock(engine, expiry_every_seconds=3600)
    try:
        assert clock.scheduler.get_job("complete-bookings") is not None
    finally:
        clock.shutdown()
