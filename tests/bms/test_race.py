"""Concurrent clients through a real server: the database lets exactly the right number through."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlmodel import select

from bench.harness import bulk_residents, serve
from bms.models import Reservation, Resource
from core.db import read_session
from core.models import Site
from tests.bms.conftest import local


async def _storm(base: str, tokens: list[str], body: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        go = asyncio.Event()

        async def one(token: str) -> httpx.Response:
            await go.wait()
            return await client.post("/api/v1/reservations", json=body, headers={"Authorization": f"Bearer {token}"})

        tasks = [asyncio.create_task(one(t)) for t in tokens]
        await asyncio.sleep(0.05)
        go.set()
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize(
    ("resource", "clients", "winners"), [("p-court", 100, 1), ("p-class", 30, 12), ("p-pool", 20, 5)]
)
def test_concurrent_bookings_of_one_slot(app, engine, sites, resource, clients, winners):
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id).where(Site.key == "paris")).one()
    users = bulk_residents(engine, site_id, clients, resource)
    start = local(4, 20)
    body = {"resource": resource, "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    with serve(app) as base:
        # A thread of its own: another test's browser may own this thread's event loop.
        with ThreadPoolExecutor(1) as pool:
            responses = pool.submit(asyncio.run, _storm(base, [t for _, t in users], body)).result()
    codes = Counter(r.status_code for r in responses)
    assert codes == {201: winners, 409: clients - winners}, [r.text for r in responses if r.status_code >= 500][:3]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"slot_taken"}
    with read_session(engine) as s:
        rid = s.exec(select(Resource.id).where(Resource.key == resource)).one()
        rows = s.exec(select(Reservation).where(Reservation.resource_id == rid)).all()
    assert len(rows) == winners and all(r.status == "confirmed" for r in rows)
    if resource != "p-class":
        assert len({r.unit_id for r in rows}) == winners  # no unit twice
