"""`list_for(scope="mine")`: the same reservations as before, found through indexes."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import text

from bms import queries
from core import auth
from core.db import read_session
from core.models import User
from tests.bms.conftest import book, local


def _mine(engine, who, **kw):
    with read_session(engine) as s:
        principal = auth.load_principal(s, s.get(User, who.id))
        return [r.id for r in queries.list_for(s, principal, scope="mine", **kw)]


def test_mine_is_planned_or_named_once_each_in_order(client, people, engine):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    d = local(5, 0)
    made = {}
    for i, (who, bens) in enumerate(
        [(alice, []), (bob, [alice.id]), (carol, []), (alice, [bob.id]), (carol, [alice.id, bob.id]), (bob, [])]
    ):
        r = book(client, who, "p-pool", d.replace(hour=8 + i), d.replace(hour=9 + i), beneficiaries=bens)
        assert r.status_code == 201, r.text
        made[i] = r.json()["id"]
    assert _mine(engine, alice) == [made[0], made[1], made[3], made[4]]  # planned or named, by start
    assert _mine(engine, bob) == [made[1], made[3], made[4], made[5]]  # named and planned: once
    assert _mine(engine, carol) == [made[2], made[4]]
    assert _mine(engine, alice, limit=2, offset=1) == [made[1], made[3]]
    assert _mine(engine, alice, start_from=d.replace(hour=10), start_to=d.replace(hour=12)) == [made[3]]
    r = client.get("/api/v1/reservations", params={"scope": "mine"}, headers=alice.headers)
    assert [x["id"] for x in r.json()] == [made[0], made[1], made[3], made[4]]


def _scans(plan: dict) -> list[dict]:
    out = [plan] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        out += _scans(child)
    return out


def test_mine_reads_reservations_through_indexes_on_postgresql(client, people, engine, backend):
    """Every scan of `reservation` in the plan has an index condition: none reads the whole table
    (the former `planner = me OR id IN (...)` could only be filtered row by row)."""
    if backend != "postgresql":
        return
    alice = people["alice"]
    d = local(6, 0)
    book(client, alice, "p-pool", d, d + timedelta(hours=1))
    with read_session(engine) as s:
        principal = auth.load_principal(s, s.get(User, alice.id))
        captured: list[str] = []
        orig = s.exec

        def capture(stmt, *a, **kw):  # type: ignore[no-untyped-def]
            if "reservation" in str(stmt) and "ORDER BY" in str(stmt):
                captured.append(str(stmt.compile(s.get_bind(), compile_kwargs={"literal_binds": True})))
            return orig(stmt, *a, **kw)

        s.exec = capture  # type: ignore[method-assign]
        queries.list_for(s, principal, scope="mine")
        s.exec = orig  # type: ignore[method-assign]
        assert len(captured) == 1
        s.execute(text("SET LOCAL enable_seqscan = off"))  # judge the plan, not a tiny table's statistics
        out = s.execute(text("EXPLAIN (FORMAT JSON) " + captured[0])).scalar_one()
        plan = (json.loads(out) if isinstance(out, str) else out)[0]["Plan"]
    scans = [p for p in _scans(plan) if p["Relation Name"] == "reservation"]
    assert scans
    for p in scans:
        assert "Index Cond" in p or "Recheck Cond" in p, p
