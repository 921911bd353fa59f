"""Listings read reservations in a constant number of queries, whatever their number (no N+1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event
from sqlmodel import select

from bms import queries
from bms.models import Reservation, ReservationChange
from core.db import read_session, write_session
from tests.bms.conftest import book, local


@contextmanager
def counting(engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs inside the block for requests (the audit checkpoint
    keeper's own thread reads the trail whenever a commit appends to it: not the request's cost)."""
    seen: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if threading.current_thread().name != "audit-checkpoint":
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _book_many(client, people, n: int, first_day: int = 20) -> list[int]:
    """n bookings of Alice's over several resources (a pool among them), some naming Bob."""
    alice, bob = people["alice"], people["bob"]
    ids = []
    for i in range(n):
        resource = ("p-class", "p-pool", "p-hall")[i % 3]
        start = local(first_day + i, 9)
        extra = {"beneficiaries": [bob.id]} if i % 2 else {}
        r = book(client, alice, resource, start, start + timedelta(hours=1), **extra)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def test_public_many_shapes_twenty_reservations_in_a_few_queries(client, people, engine):
    ids = _book_many(client, people, 20)
    # One of them has a change waiting for a manager: it is shown too.
    with write_session(engine) as s:
        r = s.get(Reservation, ids[3])
        wanted = r.start + timedelta(hours=2)
        s.add(
            ReservationChange(
                reservation_id=r.id,
                requested_by=r.planner_id,
                start=wanted,
                end=wanted + timedelta(hours=1),
                base_version=r.updated_at,
            )
        )
    with read_session(engine) as s:
        expected = [queries.public(s, r) for r in s.exec(select(Reservation).order_by(Reservation.id)).all()]
    with read_session(engine) as s:
        rows = list(s.exec(select(Reservation).order_by(Reservation.id)).all())
        assert [r.id for r in rows] == ids
        with counting(engine) as statements:
            shaped = queries.public_many(s, rows)
    # resources, venues, sites, units, beneficiaries, pending changes: never more, for any length
    assert len(statements) <= 6, statements
    assert shaped == expected
    assert sum(1 for p in shaped if p.beneficiaries == [people["bob"].id]) == 10
    assert [p.id for p in shaped if p.pending_change is not None] == [ids[3]]
    assert shaped[3].pending_change.start == wanted  # type: ignore[union-attr]


def test_list_endpoint_runs_as_many_queries_for_twenty_as_for_two(client, people, engine):
    headers = people["alice"].headers
    _book_many(client, people, 2)
    with counting(engine) as few:
        first = client.get("/api/v1/reservations", headers=headers)
    assert len(first.json()) == 2
    _book_many(client, people, 18, first_day=40)
    with counting(engine) as many:
        second = client.get("/api/v1/reservations", headers=headers)
    assert len(second.json()) == 20
    assert len(many) == len(few), (few, many)
    assert len(many) <= 15, many  # the caller, the list, and the six of public_many
