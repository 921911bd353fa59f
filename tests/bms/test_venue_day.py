"""The venue day: compact and full forms, the node cache of venues' contexts and its stamp."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter
from sqlalchemy import event, insert, select, update

from bms import availability
from bms.models import Reservation, Resource, ResourceUnit
from bookgate.provision import apply_site_file, parse_site
from core import auth
from core.audit import SYSTEM
from core.db import read_session, write_session
from core.models import User
from tests.bms.conftest import book, local

SITE = Path(__file__).with_name("site.yaml")


def _day(client, who, venue, day, fmt=None):
    params = {"date": day.isoformat(), **({"format": fmt} if fmt else {})}
    r = client.get(f"/api/v1/venues/{venue}/availability", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()


def _expand(resource_day: dict) -> list[dict]:
    """The slots a compact resource day stands for, in the full form."""
    step = timedelta(minutes=resource_day["slot_minutes"])
    out = []
    for rng in resource_day["ranges"]:
        start, end = datetime.fromisoformat(rng["start"]), datetime.fromisoformat(rng["end"])
        assert (end - start) / step == rng["slots"]
        t = start
        while t < end:
            out.append((t, t + step, rng["status"], rng["available"], rng["pending"]))
            t += step
    return out


def _slots(resource: dict) -> list[tuple]:
    iso = datetime.fromisoformat
    return [(iso(s["start"]), iso(s["end"]), s["status"], s["available"], s["pending"]) for s in resource["slots"]]


def _pending(engine, key: str, start: datetime, end: datetime, planner: int) -> None:
    with write_session(engine) as s:
        rid, uid = s.execute(
            select(Resource.id, ResourceUnit.id).join(ResourceUnit).where(Resource.key == key)
        ).first()
        values = dict(
            resource_id=rid, unit_id=uid, planner_id=planner, start=start, end=end, block_start=start,
            block_end=end, access_start=start, access_end=end, status="pending", places=1,
        )  # fmt: skip
        s.execute(insert(Reservation).values(**values))


def test_compact_form_stands_for_the_same_slots_as_the_full_one(client, people, engine):
    d = local(8, 0)
    book(client, people["alice"], "p-pool", d.replace(hour=9), d.replace(hour=11))
    book(client, people["bob"], "p-pool", d.replace(hour=10), d.replace(hour=12))
    book(client, people["carol"], "p-class", d.replace(hour=9), d.replace(hour=10), places=5)
    book(client, people["carol"], "p-class", d.replace(hour=9, minute=30), d.replace(hour=11), places=7)
    book(client, people["alice"], "p-hall", d.replace(hour=14), d.replace(hour=15))
    _pending(engine, "p-hall", d.replace(hour=16), d.replace(hour=17), people["alice"].id)
    full = {r["resource"]: r for r in _day(client, people["carol"], "p-rooms", d.date())}
    compact = {r["resource"]: r for r in _day(client, people["carol"], "p-rooms", d.date(), "compact")}
    assert set(full) == set(compact) == {"p-class", "p-pool", "p-bal", "p-managed", "p-hall"}
    for key, resource in full.items():
        assert _expand(compact[key]) == _slots(resource), key
        assert {k: compact[key][k] for k in ("timezone", "capacity", "units")} == {
            k: resource[k] for k in ("timezone", "capacity", "units")
        }
    # the cases the slots hold: limited and full pools and capacities, buffers, pending requests
    pool = {s[0].astimezone(d.tzinfo).strftime("%H:%M"): s for s in _slots(full["p-pool"])}
    assert pool["09:00"][2:4] == ("limited", 4) and pool["10:00"][2:4] == ("limited", 3)
    cls = {s[0].astimezone(d.tzinfo).strftime("%H:%M"): s for s in _slots(full["p-class"])}
    assert cls["09:30"][2:4] == ("full", 0) and cls["10:00"][2:4] == ("limited", 5)
    hall = {s[0].astimezone(d.tzinfo).strftime("%H:%M"): s for s in _slots(full["p-hall"])}
    assert hall["13:30"][2] == "full" and hall["15:00"][2] == "full" and hall["15:30"][2] == "free"
    assert hall["16:00"][4] == 1 and hall["16:30"][4] == 1 and hall["17:00"][4] == 0
    # runs are maximal: a free day of 48 slots is one range
    assert len(compact["p-managed"]["ranges"]) == 1 and compact["p-managed"]["ranges"][0]["slots"] == 48
    assert len(json.dumps(list(compact.values()))) < len(json.dumps(list(full.values()))) / 5


def test_the_joined_json_is_the_models_json(engine, people):
    """The bodies are joined from ready fragments: byte for byte what the models would give."""
    d = local(9, 0)
    _pending(engine, "p-court", d.replace(hour=9), d.replace(hour=10), people["alice"].id)
    with read_session(engine) as s:
        carol = auth.load_principal(s, s.get(User, people["carol"].id))
        day = availability.venue_day(s, availability.venue_contexts(s, carol, "p-sports"), d.date())
    assert day.full_json() == TypeAdapter(list[availability.ResourceAvailability]).dump_json(day.full())
    assert day.compact_json() == TypeAdapter(list[availability.ResourceDay]).dump_json(day.compact())


def test_full_is_the_default_and_a_bad_format_is_refused(client, people):
    d = local(3, 0).date()
    assert "slots" in _day(client, people["carol"], "p-sports", d)[0]
    assert "ranges" in _day(client, people["carol"], "p-sports", d, "compact")[0]
    r = client.get(
        "/api/v1/venues/p-sports/availability",
        params={"date": d.isoformat(), "format": "xml"},
        headers=people["carol"].headers,
    )
    assert r.status_code == 422
    r = client.get(
        "/api/v1/venues/nowhere/availability", params={"date": d.isoformat()}, headers=people["carol"].headers
    )
    assert r.status_code == 404 and r.json()["code"] == "venue_not_found"


def _statements(engine):
    seen: list[str] = []

    def on_execute(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    return seen, lambda: event.remove(engine, "before_cursor_execute", on_execute)


def test_venue_contexts_are_read_once_until_the_stamp_changes(engine, people):
    with read_session(engine) as s:
        carol = auth.load_principal(s, s.get(User, people["carol"].id))
    with read_session(engine) as s:
        first = availability.venue_contexts(s, carol, "p-sports")
    seen, stop = _statements(engine)
    try:
        with read_session(engine) as s:
            again = availability.venue_contexts(s, carol, "p-sports")
    finally:
        stop()
    assert [c.resource.key for c in again] == [c.resource.key for c in first]
    assert again[0] is first[0]  # served from the node's cache
    assert not [q for q in seen if "FROM resource" in q], seen  # only the stamp was read
    # A writer elsewhere that replaces the stamp (another node, say) makes every node read afresh.
    with write_session(engine) as s:
        availability.bump_stamp(s)
    with read_session(engine) as s:
        assert availability.venue_contexts(s, carol, "p-sports")[0] is not first[0]


def test_a_managers_rule_edit_reaches_the_venue_day_at_once(client, people):
    d = local(10, 0)
    before = {r["resource"]: r for r in _day(client, people["carol"], "p-sports", d.date(), "compact")}
    assert before["p-court"]["ranges"][0]["slots"] == 48
    r = client.get(
        "/api/v1/resources/p-court/availability",
        params={"from": d.isoformat(), "to": (d + timedelta(days=1)).isoformat()},
        headers=people["carol"].headers,
    )
    assert len(r.json()["slots"]) == 48
    r = client.patch(
        "/api/v1/resources/p-court/rules",
        json={"opening_hours": {day: ["08:00-12:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}},
        headers=people["manager"].headers,
    )
    assert r.status_code == 200, r.text
    after = {r["resource"]: r for r in _day(client, people["carol"], "p-sports", d.date(), "compact")}
    assert sum(x["slots"] for x in after["p-court"]["ranges"]) == 8
    r = client.get(
        "/api/v1/resources/p-court/availability",
        params={"from": d.isoformat(), "to": (d + timedelta(days=1)).isoformat()},
        headers=people["carol"].headers,
    )
    assert len(r.json()["slots"]) == 8  # the resource's own route caches its context too
    # a blackout, as the manager's page adds it (the same rules PATCH)
    black = {"start": d.replace(hour=9).isoformat(), "end": d.replace(hour=10).isoformat(), "reason": "works"}
    r = client.patch("/api/v1/resources/p-court/rules", json={"blackouts": [black]}, headers=people["manager"].headers)
    assert r.status_code == 200, r.text
    full = {r["resource"]: r for r in _day(client, people["carol"], "p-sports", d.date())}
    hours = sorted({datetime.fromisoformat(s["local_start"]).hour for s in full["p-court"]["slots"]})
    assert hours == [8, 10, 11]


def test_a_site_import_reaches_the_venue_day_at_once(client, people, engine):
    d = local(11, 0)
    assert len(_day(client, people["carol"], "p-sports", d.date())) == 3
    doc = yaml.safe_load(SITE.read_text())
    sports = doc["sites"][0]["venues"][0]
    sports["resources"].append({"key": "p-court-c", "name": "Court C", "kind": "court"})
    sports["rules"] = {"opening_hours": {"mon": [], "tue": [], "wed": [], "thu": [], "fri": [], "sat": [], "sun": []}}
    sports["resources"][0].setdefault("rules", {})["opening_hours"] = {
        day: ["10:00-11:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    apply_site_file(engine, parse_site(doc), SYSTEM)
    after = {r["resource"]: r for r in _day(client, people["carol"], "p-sports", d.date())}
    assert set(after) == {"p-court", "p-court-b", "p-club", "p-court-c"}
    assert len(after["p-court"]["slots"]) == 2 and after["p-court-c"]["slots"] == []
    # a unit retired by the import: the venue's cached contexts follow
    rooms = doc["sites"][0]["venues"][1]["resources"]
    next(x for x in rooms if x["key"] == "p-pool")["pool"]["units"] = 2
    apply_site_file(engine, parse_site(doc), SYSTEM)
    pool = next(r for r in _day(client, people["carol"], "p-rooms", d.date()) if r["resource"] == "p-pool")
    assert pool["units"] == 2 and pool["slots"][0]["available"] == 2


def test_an_unstamped_write_is_not_seen_until_a_stamp(client, people, engine):
    """What the stamp guards: without it, the node keeps what it read (so writers must stamp)."""
    d = local(12, 0).date()
    assert {r["resource"] for r in _day(client, people["carol"], "p-sports", d)} == {"p-court", "p-court-b", "p-club"}
    with write_session(engine) as s:
        s.execute(update(Resource).where(Resource.key == "p-club").values(active=False))
    assert len(_day(client, people["carol"], "p-sports", d)) == 3
    with write_session(engine) as s:
        availability.bump_stamp(s)
    assert {r["resource"] for r in _day(client, people["carol"], "p-sports", d)} == {"p-court", "p-court-b"}


@pytest.mark.parametrize("fmt", ["full", "compact"])
def test_the_venue_of_another_site_stays_hidden(client, people, fmt):
    d = local(3, 0).date().isoformat()
    r = client.get(
        "/api/v1/venues/p-sports/availability", params={"date": d, "format": fmt}, headers=people["ny"].headers
    )
    assert r.status_code == 404
