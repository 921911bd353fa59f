"""The waitlist: a freed place is offered to the first candidate; accept books through the booking
path; decline and lapse pass it on; an accept too late or after the place went is refused; of two
accepts racing for one offer or one place, exactly one wins."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import col, select, update

from bms import waitlist
from bms.models import Reservation
from core.auth import load_principal
from core.db import read_session, utcnow, write_session
from core.errors import AppError
from core.models import User
from core.outbox import OutboxMessage
from tests.notify.conftest import book, deliver, local


def _principal(engine, person):
    with read_session(engine) as s:
        return load_principal(s, s.get(User, person.id))


def _join(client, who, start, end, resource="p-court"):
    return client.post(
        "/api/v1/waitlist",
        json={"resource": resource, "start": start.isoformat(), "end": end.isoformat()},
        headers=who.headers,
    )


def _entry(engine, entry_id) -> waitlist.WaitlistEntry:
    with read_session(engine) as s:
        e = s.get(waitlist.WaitlistEntry, entry_id)
        assert e is not None
        return e


@pytest.fixture
def full(client, people):
    """p-court at day 5, 18:00-19:00 is alice's; returns (start, end, alice's reservation id)."""
    start = local(5, 18)
    end = start + timedelta(hours=1)
    r = book(client, people["alice"], "p-court", start, end)
    assert r.status_code == 201, r.text
    return start, end, r.json()["id"]


def test_offer_then_accept_books_through_the_booking_path(client, engine, people, full, smtp, worker):
    start, end, rid = full
    carol = people["carol"]
    assert book(client, carol, "p-court", start, end).status_code == 409
    free = _join(client, carol, start + timedelta(hours=2), end + timedelta(hours=2))
    assert free.status_code == 409 and free.json()["code"] == "slot_free"  # 20:00-21:00 has room: book it
    r = _join(client, carol, start, end)
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["status"] == "waiting"
    assert _join(client, carol, start, end).json()["code"] == "already_waiting"

    assert (
        client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers).status_code == 200
    )
    offered = _entry(engine, entry["id"])
    assert offered.status == "offered" and offered.offer_expires_at is not None
    deliver(worker)
    [mail] = [m for m in smtp.to(carol.email) if m["Subject"] == "A place is free: Court"]
    assert "it is held for you until" in mail.get_body(preferencelist=("plain",)).get_content()

    r = client.post(f"/api/v1/waitlist/{entry['id']}/accept", headers=carol.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "booked"
    with read_session(engine) as s:
        booked = s.get(Reservation, r.json()["reservation_id"])
    assert booked is not None and booked.planner_id == carol.id and booked.status == "confirmed"
    assert client.post(f"/api/v1/waitlist/{entry['id']}/accept", headers=carol.headers).json()["code"] == "offer_closed"


def test_decline_and_lapse_pass_the_offer_on_in_order(client, engine, people, full):
    start, end, rid = full
    carol, bob = people["carol"], people["bob"]
    first = _join(client, carol, start, end).json()["id"]
    second = _join(client, bob, start, end).json()["id"]
    client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    assert _entry(engine, first).status == "offered" and _entry(engine, second).status == "waiting"

    expires = _entry(engine, first).offer_expires_at
    assert expires is not None
    with write_session(engine) as s, pytest.raises(AppError) as refused:
        waitlist.accept(s, _principal(engine, carol), first, now=expires + timedelta(seconds=1))
    assert refused.value.code == "offer_lapsed"

    assert waitlist.lapse_offers(engine, expires - timedelta(seconds=1)) == 0
    assert waitlist.lapse_offers(engine, expires + timedelta(seconds=1)) == 1
    assert _entry(engine, first).status == "lapsed" and _entry(engine, second).status == "offered"

    r = client.post(f"/api/v1/waitlist/{second}/decline", headers=bob.headers)
    assert r.status_code == 200 and r.json()["status"] == "declined"
    with read_session(engine) as s:
        offers = s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == "waitlist.offer")).all()
    assert [o.payload["entry_id"] for o in offers] == [first, second]
    assert client.post(f"/api/v1/waitlist/{second}/accept", headers=carol.headers).status_code == 404  # not hers


def test_accept_after_the_place_went_is_refused(client, engine, people, full):
    start, end, rid = full
    carol = people["carol"]
    entry = _join(client, carol, start, end).json()["id"]
    client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    with write_session(engine) as s:  # a booking that raced the offer and committed all the same
        s.exec(update(Reservation).where(col(Reservation.id) == rid).values(status="confirmed"))
    r = client.post(f"/api/v1/waitlist/{entry}/accept", headers=carol.headers)
    assert r.status_code == 409 and r.json()["code"] == "place_gone"
    assert _entry(engine, entry).status == "offered"  # refused whole: nothing half-done


def _race(engine, calls):
    """Run each call in its own unit of work at the same moment; (successes, refusal codes)."""
    barrier = threading.Barrier(len(calls))
    wins: list[int] = []
    codes: list[str] = []

    def run(fn):
        barrier.wait()
        try:
            with write_session(engine) as s:
                out = fn(s)
            wins.append(out.id)
        except AppError as exc:
            codes.append(exc.code)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return wins, codes


def test_two_accepts_of_one_offer_one_wins(client, engine, people, full):
    start, end, rid = full
    carol = people["carol"]
    entry = _join(client, carol, start, end).json()["id"]
    client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    p = _principal(engine, carol)
    wins, codes = _race(engine, [lambda s: waitlist.accept(s, p, entry)] * 2)
    assert wins == [entry] and codes == ["offer_closed"]
    with read_session(engine) as s:
        mine = s.exec(select(Reservation).where(col(Reservation.planner_id) == carol.id)).all()
    assert len(mine) == 1


def test_manual_venue_two_offers_for_one_place_one_wins(client, engine, people, full):
    start, end, rid = full
    manager, carol, bob = people["manager"], people["carol"], people["bob"]
    r = client.put(
        "/api/v1/waitlist/policies/p-sports", json={"mode": "manual", "hold_minutes": 15}, headers=manager.headers
    )
    assert r.status_code == 200, r.text
    assert (
        client.put("/api/v1/waitlist/policies/p-sports", json={"mode": "manual"}, headers=carol.headers).status_code
        == 403
    )
    first = _join(client, carol, start, end).json()["id"]
    second = _join(client, bob, start, end).json()["id"]
    client.post(f"/api/v1/reservations/{rid}/cancel", json={}, headers=people["alice"].headers)
    assert _entry(engine, first).status == "waiting"  # the managers choose

    q = client.get("/api/v1/waitlist", params={"resource": "p-court"}, headers=manager.headers)
    assert q.status_code == 200
    assert [e["id"] for e in q.json()] == [first, second]
    assert q.json()[0]["history"] == {"active": 0, "no_shows": 0, "cancellations": 0}
    assert client.get("/api/v1/waitlist", params={"resource": "p-court"}, headers=carol.headers).status_code == 403

    for entry in (first, second):
        assert client.post(f"/api/v1/waitlist/{entry}/offer", headers=manager.headers).status_code == 200
    wins, codes = _race(
        engine,
        [
            lambda s: waitlist.accept(s, _principal(engine, carol), first),
            lambda s: waitlist.accept(s, _principal(engine, bob), second),
        ],
    )
    assert len(wins) == 1 and codes == ["place_gone"]
    with read_session(engine) as s:
        holding = s.exec(
            select(Reservation).where(
                col(Reservation.resource_id) == _entry(engine, first).resource_id,
                col(Reservation.start) == start,
                col(Reservation.status) == "confirmed",
            )
        ).all()
    assert len(holding) == 1
    assert utcnow() < start
