"""Round after round of 50 clients racing for one slot through a real server: on PostgreSQL the
losers meet the exclusion constraint, and now and then a deadlock (40P01) while it is checked;
every loser is a 409 slot_taken, never a 500."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlmodel import select

from bench.harness import bulk_residents, serve
from bms.models import Reservation, Resource
from core.db import read_session
from core.models import Site
from tests.bms.conftest import local
from tests.bms.test_race import _storm

CLIENTS = 50
ROUNDS = 8


def test_rounds_of_races_answer_201_or_409_never_500(app, engine, sites):
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id).where(Site.key == "paris")).one()
    tokens = [t for _, t in bulk_residents(engine, site_id, CLIENTS, "rounds")]
    codes: Counter[int] = Counter()
    errors: list[str] = []
    with serve(app) as base, ThreadPoolExecutor(1) as pool:
        for n in range(ROUNDS):
            # The pool's five spaces: racers deadlock on the same unit and move on to the next one.
            start = local(5 + n // 4, 8 + 2 * (n % 4))
            body = {"resource": "p-pool", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
            responses = pool.submit(asyncio.run, _storm(base, tokens, body)).result()
            codes.update(r.status_code for r in responses)
            errors += [r.text for r in responses if r.status_code not in (201, 409)]
            errors += [r.text for r in responses if r.status_code == 409 and r.json()["code"] != "slot_taken"]
    assert errors == [], errors[:3]
    assert codes == {201: 5 * ROUNDS, 409: (CLIENTS - 5) * ROUNDS}
    with read_session(engine) as s:
        rid = s.exec(select(Resource.id).where(Resource.key == "p-pool")).one()
        rows = s.exec(select(Reservation).where(Reservation.resource_id == rid)).all()
    assert len(rows) == 5 * ROUNDS
    assert len({(r.unit_id, r.start) for r in rows}) == len(rows)  # no unit twice in a slot
