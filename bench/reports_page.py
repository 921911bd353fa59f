"""The managers' reports page of a venue of 20 rooms, with 1,000,000 reservations stored.

    .venv/bin/python -m bench.reports_page [--backend sqlite|postgresql|both] [--reservations N]

Server time of `GET /reports?venue=...&weeks=4&end=...` (occupancy by weekday and hour, outcome
rates, moderation lead time, busiest hours: the page's queries and its template) and of one chart
(`occupancy.svg`, drawn on the server) and one CSV, requested in-process through the whole app,
with `/healthz` of the same app as the baseline. The data set is `bench.portal_calendar`'s: 50
venues of 20 rooms, about 70 % of the hourly slots of 58 days booked.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from bench.availability import EPOCH
from bench.common import fresh_database, pg_reachable, summary
from bench.portal_calendar import populate
from bookgate.app import create_app
from config import Settings
from core.db import read_session
from core.deps import SESSION_COOKIE
from core.models import RoleGrant, User, Venue
from core.security import new_token, token_hash


def manager_token(engine) -> str:
    """An admin's session (admins manage every venue), written directly: no hashing in the bench."""
    from core.models import AuthSession

    token = new_token("bgs")
    with engine.begin() as conn:
        uid = conn.execute(insert(User).values(email="boss@example.com", name="Boss").returning(User.id)).scalar()
        conn.execute(insert(RoleGrant).values(user_id=uid, role="admin"))
        conn.execute(
            insert(AuthSession).values(
                user_id=uid, token_hash=token_hash(token), created_at=EPOCH, expires_at=EPOCH + timedelta(days=3650)
            )
        )
    return token


def measure(engine, iterations: int, days_span: int) -> dict[str, list[float]]:
    with read_session(engine) as s:
        venues = list(s.exec(select(Venue.key)).scalars())
    token = manager_token(engine)
    app = create_app(Settings(scheduler=False, _env_file=None), engine=engine, migrate_on_start=False)  # type: ignore[call-arg]
    rng = random.Random(5)
    out: dict[str, list[float]] = {"page": [], "svg": [], "csv": [], "healthz": []}
    with TestClient(app) as client:
        client.cookies.set(SESSION_COOKIE, token)
        gc.collect()
        gc.freeze()
        for i in range(iterations + 5):
            venue = rng.choice(venues)
            end = (EPOCH + timedelta(days=28 + rng.randrange(max(1, days_span - 29)))).date().isoformat()
            params = {"weeks": 4, "end": end}
            timings = {}
            for name, path, extra in (
                ("page", "/reports", {"venue": venue}),
                ("svg", f"/reports/{venue}/occupancy.svg", {"resource": f"r{venue[1:]}-000"}),
                ("csv", f"/reports/{venue}/occupancy.csv", {}),
                ("healthz", "/healthz", {}),
            ):
                t = time.perf_counter()
                r = client.get(path, params={**params, **extra} if name != "healthz" else None)
                timings[name] = (time.perf_counter() - t) * 1000
                assert r.status_code == 200, (path, r.text[:300])
            if i >= 5:
                for name, ms in timings.items():
                    out[name].append(ms)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--reservations", type=int, default=1_000_000)
    p.add_argument("--resources", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=50)
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        with fresh_database(backend, Path("var/bench")) as (_url, engine):
            days_span, load_s = populate(engine, args.reservations, args.resources)
            got = measure(engine, args.iterations, days_span)
            print(f"{backend}: {args.reservations:,} reservations, {args.resources} rooms (loaded in {load_s:.0f} s)")
            print(f"  reports page, venue of 20, 4 weeks: {summary(got['page'])}")
            print(f"  one heat map (occupancy.svg):       {summary(got['svg'])}")
            print(f"  occupancy CSV of the venue:         {summary(got['csv'])}")
            print(f"  /healthz of the same app (baseline): {summary(got['healthz'])}")


if __name__ == "__main__":
    main()
