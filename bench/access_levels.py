"""Online decisions with standing access: 10,000 residents holding an always-open level on two
doors, beside the 100,000 live reservation grants of `bench.access_decisions`.

    .venv/bin/python -m bench.access_levels [--backend sqlite|postgresql|both] [--residents 10000]
        [--grants 100000] [--queries 200000]

Targets (issue 12): decision p99 <= 10 us, gateway RSS <= 300 MB, as without levels.

The site, holders and bookings are those of `bench.access_decisions` (1,000 rooms on 1,000 esp-rfid
controllers, 100,000 badge holders in 1,000 bookings). On top: 10,000 residents with a badge each
and the resident role at the site (bulk-written, as an HR import would), and a `residents` level
(door 0 as the building entrance, door 1 as the garage gate, day and night, held by role), written
by `access.levels.sync_levels` exactly as the clock's job writes it; then a second sync, which must
find nothing to change. The queries: 80 % the mix of `bench.access_decisions`, 10 % a resident at
the entrance (allowed), 10 % a resident at a room door (refused). The baseline in the same run is
the index loaded and queried before the level is written.
"""

from __future__ import annotations

import argparse
import gc
import random
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, update
from sqlmodel import select

from access.decisions import DecisionIndex
from access.desired import may_enter
from access.levels import sync_levels
from access.models import AccessLevel, AccessLevelDoor, Credential, Transition
from access.protocol import compact_hex
from access.service import state_for_doors
from bench import access_decisions as base
from bench import access_rig as rig
from bench.common import fresh_database, percentile
from core.db import read_session, utcnow, write_session
from core.models import Role, RoleGrant, Site, User


def add_residents(engine, n: int, offset: int) -> list[tuple[int, int, str]]:  # type: ignore[no-untyped-def]
    """n residents of the (only) site with a badge each; (user, credential, uid)."""
    now = utcnow()
    tag = secrets.token_hex(3)
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id)).one()
    with engine.begin() as conn:
        users = [
            {
                "email": f"resident{i}-{tag}@example.com",
                "name": f"Resident {i}",
                "locale": "en",
                "is_active": True,
                "created_at": now,
            }
            for i in range(n)
        ]
        uids = conn.execute(insert(User).returning(User.id, sort_by_parameter_order=True), users).scalars().all()
        values = [rig.badge_uid(offset + i) for i in range(n)]
        creds = [
            {
                "user_id": u,
                "kind": "badge",
                "format": "uid",
                "value": v,
                "compact": compact_hex(v),
                "label": "",
                "created_at": now,
            }
            for u, v in zip(uids, values, strict=True)
        ]
        cids = conn.execute(insert(Credential).returning(Credential.id, sort_by_parameter_order=True), creds).scalars()
        conn.execute(insert(RoleGrant), [{"user_id": u, "role": Role.resident.value, "site_id": site_id} for u in uids])
    return list(zip(uids, cids.all(), values, strict=True))


def measure(index: DecisionIndex, qs: list[tuple]) -> tuple[list[float], int]:
    decide = index.decide
    for door, card, at, _e in qs[:1000]:
        decide(door, "badge", card, at)
    lat: list[float] = []
    wrong = 0
    clock = time.perf_counter_ns
    for door, card, at, expected in qs:
        t0 = clock()
        d = decide(door, "badge", card, at)
        lat.append((clock() - t0) / 1000)
        wrong += d.allowed != expected
    return lat, wrong


def settle(engine) -> None:  # type: ignore[no-untyped-def]
    """Steady state: what was due has been pushed (the controllers are not simulated here, see
    `bench.access_decisions`); revokes due at the windows' ends stay pending."""
    with engine.begin() as conn:
        conn.execute(
            update(Transition)
            .where(Transition.status == "pending", Transition.due_at <= datetime.now(UTC))  # type: ignore[arg-type]
            .values(status="done", done_at=datetime.now(UTC))
        )


def run(backend: str, residents: int, grants: int, n_queries: int, spot: int, mqtt_url: str) -> None:
    gc.unfreeze()
    now = datetime.now(UTC).replace(microsecond=0)
    with fresh_database(backend, Path("var/bench")) as (db_url, engine):
        t = time.perf_counter()
        site, holders, info = base.populate(engine, grants, now)
        people = add_residents(engine, residents, grants)
        populate_s = time.perf_counter() - t
        entrance, garage = site.door_ids[0], site.door_ids[1]
        rng = random.Random(5)
        mix = [(d, c, at, e) for d, c, at, e, _i in base.queries(site, holders, info, n_queries, now)]
        qs = []
        for q in mix:
            r = rng.random()
            if r < 0.10:
                qs.append((entrance, rng.choice(people)[2], now, True))
            elif r < 0.20:
                qs.append((rng.choice(site.door_ids[2:]), rng.choice(people)[2], now, False))
            else:
                qs.append(q)

        # baseline: the same index and queries before any level exists (residents are refused)
        before = DecisionIndex()
        with read_session(engine) as s:
            before.load(s, now)
        gc.collect()
        gc.freeze()
        base_lat, _ = measure(before, qs)
        gc.unfreeze()
        del before
        mqtt = mqtt_url if rig.mqtt_reachable(mqtt_url) else ""
        settle(engine)
        base_gateway = base.measure_gateway(db_url, mqtt)

        with write_session(engine) as s:
            site_id = s.exec(select(Site.id)).one()
            level = AccessLevel(
                site_id=site_id,
                key="residents",
                name="Residents",
                schedule={d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
                roles=["resident"],
            )
            s.add(level)
            s.flush()
            s.add(AccessLevelDoor(level_id=level.id, door_id=entrance))
            s.add(AccessLevelDoor(level_id=level.id, door_id=garage))
        t = time.perf_counter()
        with write_session(engine) as s:
            written = sync_levels(s, now)
        sync_s = time.perf_counter() - t
        t = time.perf_counter()
        with write_session(engine) as s:
            again = sync_levels(s, now)
        resync_s = time.perf_counter() - t

        index = DecisionIndex()
        t = time.perf_counter()
        with read_session(engine) as s:
            index.load(s, now)
        load_s = time.perf_counter() - t
        gc.collect()
        gc.freeze()
        lat, wrong = measure(index, qs)
        gc.unfreeze()

        cred_of = {v: c for _u, c, v in [*holders, *people]}
        disagree = 0
        with read_session(engine) as s:
            for door, card, at, _e in random.Random(6).sample(qs, spot):
                state = state_for_doors(s, [door], at)
                ref = card in cred_of and may_enter(state, door, cred_of[card], at)
                disagree += ref != index.decide(door, "badge", card, at).allowed

        settle(engine)
        gateway = base.measure_gateway(db_url, mqtt)

    print(
        f"{backend}: {grants:,} reservation grants + {residents:,} residents on a level of 2 doors "
        f"({index.size()}), populated in {populate_s:.0f} s"
    )
    print(
        f"  sync_levels: {written:,} changes (holders given the level, then their windows) in {sync_s:.1f} s; "
        f"the next sync changed {again} "
        f"in {resync_s:.2f} s; index loaded in {load_s:.2f} s"
    )
    print(
        f"  decide(): {len(qs):,} queries: p50 {statistics.median(lat):.2f} us, p99 {percentile(lat, 99):.2f} us "
        f"(target <= 10 us: {'met' if percentile(lat, 99) <= 10 else 'MISSED'}); baseline without the level "
        f"p50 {statistics.median(base_lat):.2f} us, p99 {percentile(base_lat, 99):.2f} us; wrong answers: {wrong}; "
        f"disagreements with the reference on {spot}: {disagree}"
    )
    for label, g in (("without the level", base_gateway), ("with the level", gateway)):
        b, a, hwm = (g[k] / 1024 for k in ("rss_before_kb", "rss_after_kb", "hwm_kb"))
        print(
            f"  gateway process {label} (create_app + lifespan, start-up {g['startup_s']:.1f} s): RSS {b:.0f} MB"
            f" -> {a:.0f} MB with the index loaded ({g['index']}), peak {hwm:.0f} MB "
            f"(target <= 300 MB: {'met' if a <= 300 else 'MISSED'})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--residents", type=int, default=10_000)
    p.add_argument("--grants", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200_000)
    p.add_argument("--spot-check", type=int, default=300)
    p.add_argument("--mqtt-url", default=rig.MQTT_URL)
    args = p.parse_args()
    for backend in rig.backends(args.backend):
        run(backend, args.residents, args.grants, args.queries, args.spot_check, args.mqtt_url)


if __name__ == "__main__":
    main()
