"""The per-user limit of active reservations (`max_active_per_user`) holds on every path that
adds a live booking, including moves and parallel requests, on both databases."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlmodel import func, select

from bms import service
from bms.models import Reservation
from core.auth import load_principal
from core.db import read_session, write_session
from core.errors import AppError
from core.models import User
from tests.bms.conftest import book, local


def _limit(client, people, resource: str, n: int) -> None:
    r = client.patch(
        f"/api/v1/resources/{resource}/rules", json={"max_active_per_user": n}, headers=people["manager"].headers
    )
    assert r.status_code == 200, r.text


def _active(engine, user_id: int) -> int:
    with read_session(engine) as s:
        return s.exec(
            select(func.count())
            .select_from(Reservation)
            .where(
                Reservation.planner_id == user_id,
                Reservation.status.in_(["pending", "confirmed", "checked_in"]),  # type: ignore[attr-defined]
            )
        ).one()


def test_a_move_that_would_exceed_the_limit_is_refused(client, people):
    """Alice holds one booking on p-class (at most 1 active per user there) and one elsewhere: moving
    the p-class one counts like booking it anew, so she would hold two and is refused. Before the fix
    a move never counted her bookings and went through."""
    _limit(client, people, "p-class", 1)
    alice = people["alice"]
    s = local(9, 10)
    mine = book(client, alice, "p-class", s, s + timedelta(hours=1))
    assert mine.status_code == 201, mine.text
    assert book(client, alice, "p-hall", s, s + timedelta(hours=1)).status_code == 201  # its own limit: 500
    moved = client.post(
        f"/api/v1/reservations/{mine.json()['id']}/reschedule",
        json={"start": (s + timedelta(hours=2)).isoformat(), "end": (s + timedelta(hours=3)).isoformat()},
        headers=alice.headers,
    )
    assert moved.status_code == 409, moved.text
    assert moved.json() | {"message": ""} == {
        "code": "quota_exceeded",
        "message": "",
        "quota": "max_active_reservations",
        "limit": 1,
        "used": 1,
    }
    got = client.get(f"/api/v1/reservations/{mine.json()['id']}", headers=alice.headers).json()
    assert got["start"] == mine.json()["start"] and got["changes"] == 0  # nothing moved


def test_a_move_within_the_limit_still_goes_through(client, people):
    """At the limit, moving one's own booking does not add one: it is counted once, at its new times."""
    _limit(client, people, "p-class", 1)
    carol = people["carol"]
    s = local(9, 10)
    mine = book(client, carol, "p-class", s, s + timedelta(hours=1)).json()
    assert book(client, carol, "p-class", s + timedelta(hours=4), s + timedelta(hours=5)).json()["quota"] == (
        "max_active_reservations"
    )
    moved = client.post(
        f"/api/v1/reservations/{mine['id']}/reschedule",
        json={"start": (s + timedelta(hours=2)).isoformat(), "end": (s + timedelta(hours=3)).isoformat()},
        headers=carol.headers,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["changes"] == 1


def test_parallel_bookings_of_one_person_cannot_both_pass_the_limit(client, people, engine):
    """Two bookings of Carol's in two transactions at once, with room for one more: the second waits
    for the first and is then refused. Before the fix, on PostgreSQL, each counted without the
    other's uncommitted row and both were stored."""
    _limit(client, people, "p-class", 1)
    with read_session(engine) as s:
        carol = load_principal(s, s.get(User, people["carol"].id))
    first_start, second_start = local(15, 10), local(15, 14)
    started = threading.Event()
    outcome: list[str] = []

    def second() -> None:
        started.set()
        try:
            with write_session(engine) as s:
                service.create(
                    s,
                    carol,
                    service.ReservationCreate(
                        resource="p-class", start=second_start, end=second_start + timedelta(hours=1)
                    ),
                )
            outcome.append("created")
        except AppError as exc:
            outcome.append(exc.code)

    with write_session(engine) as s:
        service.create(
            s,
            carol,
            service.ReservationCreate(resource="p-class", start=first_start, end=first_start + timedelta(hours=1)),
        )
        thread = threading.Thread(target=second)
        thread.start()
        started.wait(10)
        thread.join(1.0)  # time for the second to reach its check
        assert thread.is_alive(), f"the second booking did not wait for the first: {outcome}"
    thread.join(40)
    assert outcome == ["quota_exceeded"]
    assert _active(engine, people["carol"].id) == 1
