"""Visitors: QR check-in to a door grant acknowledged by an esp-rfid controller, and the on-site
board's stream to 50 connected clients.

    .venv/bin/python -m bench.visit_checkin [--backend sqlite|postgresql] [--visits 300] [--events 1000]

1. Check-in to grant. A real server (uvicorn, its clock and its esp-rfid driver over the local
   Mosquitto) and a simulated esp-rfid controller for the courts gate. Each visitor holds a day
   badge; the desk posts the visit's QR token to `POST /api/v1/visits/check-in`, and the time runs
   until the controller has stored the badge and acknowledged the command (stamped by the device
   when its handler returns, which is when it sends its acknowledgement). One visit at a time.
   Baseline in the same run: the same server's `GET /healthz` round trip, and the check-in call's
   own response time. Target: p95 <= 300 ms.
2. Board stream. 50 clients hold `GET /api/v1/visits/stream`; a writer commits arrivals in small
   transactions as fast as it can; we count deliveries per second over all clients and the lag
   from an event's commit to its receipt. Baseline: the rate the writer commits events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import yaml
from sqlmodel import col, select

from access.models import Credential, Transition
from bench.common import fresh_database, pg_reachable
from bench.harness import serve
from bookgate.app import create_app
from bookgate.provision import apply_site_file
from config import Settings, get_settings
from config.site import example_path, parse_site_document
from core import auth
from core.audit import SYSTEM
from core.db import read_session, utcnow, write_session
from core.security import PasswordHashing
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
from vms import schemas, service
from vms.models import VisitEvent

HASHING = PasswordHashing(time_cost=1, memory_kib=1024, parallelism=1)
SITE = "les-tilleuls"
QUIET = 50  # single arrivals, 0.1 s apart, after the burst


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def line(label: str, ms: list[float]) -> str:
    return (
        f"{label:<34} n={len(ms):<4} p50 {statistics.median(ms):7.1f} ms  p95 {pct(ms, 95):7.1f} ms  "
        f"p99 {pct(ms, 99):7.1f} ms  max {max(ms):7.1f} ms"
    )


def _desk(engine) -> tuple[str, auth.Principal]:  # type: ignore[no-untyped-def]
    """Rita at reception of the example site, with a bearer token."""
    with write_session(engine) as s:
        password = secrets.token_urlsafe(12)
        rita = auth.create_user(
            s,
            SYSTEM,
            auth.UserCreate(
                email=f"rita-{secrets.token_hex(3)}@example.com",
                name="Rita",
                password=password,
                roles=[auth.RoleIn(role="reception", site=SITE)],
            ),
            HASHING,
        )
        principal = auth.load_principal(s, rita)
    return password, principal


def _visits(engine, principal: auth.Principal, n: int) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """n visits hosted by reception on the courts gate, each visitor holding a day badge; (token, uid)."""
    out = []
    now = utcnow()
    with write_session(engine) as s:
        for i in range(n):
            data = schemas.InviteIn(
                site=SITE,
                host_id=principal.user_id,
                visitors=[schemas.VisitorIn(name=f"Visitor {i}")],
                start=now - timedelta(minutes=5),
                end=now + timedelta(hours=2),
                doors=["court-gate"],
            )
            ((visit, token),) = service.invite(s, principal, data)
            # every byte >= 0x10: the MFRC522 spelling (bytes without leading zeros) is the same text
            uid = bytes([0xC1, 0x11 + (i // 200) % 200, 0x11 + i % 200, 0x42]).hex()
            service.give_badge(s, principal, visit.id or 0, uid)
            out.append((token, uid))
    return out


def check_in_to_grant(backend: str, n: int, mqtt_url: str, work: Path) -> None:
    prefix = f"bench/visit-{secrets.token_hex(4)}"
    with fresh_database(backend, work) as (_url, engine):
        doc = yaml.safe_load(example_path().read_text())
        for c in doc["sites"][0]["controllers"]:
            if c["driver"] == "esprfid":
                c["settings"]["topic"] = f"{prefix}/{c['key']}"
        apply_site_file(engine, parse_site_document(doc), SYSTEM)
        courts = next(c for c in doc["sites"][0]["controllers"] if c["key"] == "courts-ctl")
        fleet = SimulatorFleet(
            MqttSettings.from_url(mqtt_url),
            [DeviceConfig(courts["settings"]["topic"], courts["settings"]["doorip"], "courts", heartbeat_interval=5)],
        )
        fleet.start()
        assert fleet.wait_ready(10)
        device = fleet[courts["settings"]["topic"]]
        acked: dict[str, float] = {}
        handle = device.handle_command

        def stamped(payload: bytes) -> None:
            handle(payload)
            try:
                data = json.loads(payload)
            except ValueError:
                return
            if data.get("cmd") == "adduser":
                acked.setdefault(str(data.get("uid")), time.perf_counter())

        device.handle_command = stamped  # type: ignore[method-assign]
        password, principal = _desk(engine)
        visits = _visits(engine, principal, n)
        settings = Settings(
            var_dir=work / "var",
            scheduler=True,
            mqtt_url=mqtt_url,
            secret_key=get_settings().effective_secret_key(),  # the key the audit chain was written with
            _env_file=None,
        )  # type: ignore[call-arg]
        app = create_app(settings, engine=engine, migrate_on_start=False)
        try:
            with serve(app) as base, httpx.Client(base_url=base, timeout=30) as http:
                r = http.post("/api/v1/auth/token", data={"username": principal.email, "password": password})
                headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
                time.sleep(2)  # the driver connects and the controller reports in
                health, call, grant = [], [], []
                for _ in range(50):
                    t0 = time.perf_counter()
                    http.get("/healthz")
                    health.append((time.perf_counter() - t0) * 1000)
                for token, uid in visits:
                    t0 = time.perf_counter()
                    r = http.post("/api/v1/visits/check-in", json={"token": token, "site": SITE}, headers=headers)
                    t1 = time.perf_counter()
                    assert r.status_code == 200 and r.json()["status"] == "checked_in", r.text
                    deadline = t0 + 30
                    while uid not in acked and time.perf_counter() < deadline:
                        time.sleep(0.0005)
                    if uid not in acked:
                        with read_session(engine) as s:
                            cred = s.exec(select(Credential).where(col(Credential.value) == uid)).one()
                            rows = s.exec(select(Transition).where(col(Transition.credential_id) == cred.id)).all()
                            seen = [(t.action, t.status, t.attempts, t.due_at, t.last_error) for t in rows]
                        raise SystemExit(f"the grant of {uid} never reached the controller within 30 s: {seen}")
                    call.append((t1 - t0) * 1000)
                    grant.append((acked[uid] - t0) * 1000)
        finally:
            fleet.stop()
        print(f"[{backend}] check-in -> grant acknowledged by the esp-rfid controller, {n} visits, one at a time")
        print("  " + line("baseline GET /healthz", health))
        print("  " + line("POST /visits/check-in response", call))
        print("  " + line("check-in -> grant acknowledged", grant))
        print(f"  target p95 <= 300 ms: {'met' if pct(grant, 95) <= 300 else 'MISSED'}")


async def _listen(port: int, token: str, n: int, got: list[tuple[float, int]], ready: asyncio.Event) -> None:
    """One board client on a raw connection (HTTP/1.1, chunked): the bench's own parsing stays cheap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        (
            f"GET /api/v1/visits/stream?site={SITE} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    ready.set()
    while len(got) < n:
        raw = await reader.readline()
        if not raw:
            break
        if raw.startswith(b"id:"):
            got.append((time.time(), int(raw[3:])))
    writer.close()


def listeners_main(port: int, token: str, clients: int, events: int, out: str) -> None:
    """The 50 board clients, in a process of their own (as browsers would be other machines)."""

    async def run() -> list[list[tuple[float, int]]]:
        got: list[list[tuple[float, int]]] = [[] for _ in range(clients)]
        readies = [asyncio.Event() for _ in range(clients)]
        tasks = [asyncio.create_task(_listen(port, token, events, got[i], readies[i])) for i in range(clients)]
        await asyncio.gather(*(r.wait() for r in readies))
        print("ready", flush=True)
        await asyncio.wait(tasks, timeout=120)  # what arrived by then is reported, missing ones too
        return got

    with open(out, "w") as f:
        json.dump(asyncio.run(run()), f)


def board_stream(backend: str, events: int, clients: int, work: Path) -> None:
    with fresh_database(backend, work) as (_url, engine):
        apply_site_file(engine, parse_site_document(yaml.safe_load(example_path().read_text())), SYSTEM)
        password, principal = _desk(engine)
        visit = _one_visit(engine, principal)
        settings = Settings(
            var_dir=work / "var2", scheduler=False, secret_key=get_settings().effective_secret_key(), _env_file=None
        )  # type: ignore[call-arg]
        app = create_app(settings, engine=engine, migrate_on_start=False)
        out = work / "received.json"
        with serve(app) as base:
            port = int(base.rsplit(":", 1)[1])
            token = httpx.post(
                base + "/api/v1/auth/token", data={"username": principal.email, "password": password}
            ).json()["access_token"]
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.visit_checkin",
                    "--listen",
                    f"{port},{token},{clients},{events + QUIET},{out}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # every subscription is in place
            written: dict[int, float] = {}

            def write(n: int, per_commit: int) -> list[int]:
                with write_session(engine) as s:
                    rows = [VisitEvent(site_id=visit.site_id, visit_id=visit.id or 0, kind="arrival") for _ in range(n)]
                    s.add_all(rows)
                    s.flush()
                    ids = [r.id or 0 for r in rows]
                now = time.time()
                for i in ids:
                    written[i] = now
                return ids

            t0 = time.time()
            burst: list[int] = []
            for _batch in range(0, events, 10):
                burst += write(10, 10)
            wrote = time.time() - t0
            time.sleep(3)  # the burst drains
            quiet: list[int] = []
            for _one in range(QUIET):
                quiet += write(1, 1)
                time.sleep(0.1)
            child.wait(300)
        received = json.loads(out.read_text())
        burst_set, quiet_set = set(burst), set(quiet)
        total = sum(1 for r in received for _, i in r if i in burst_set)
        last = max(t for r in received for t, i in r if i in burst_set)
        lags = [(t - written[i]) * 1000 for r in received for t, i in r if i in burst_set]
        calm = [(t - written[i]) * 1000 for r in received for t, i in r if i in quiet_set]
        print(f"[{backend}] on-site stream to {clients} SSE clients (one poller per node, every 0.2 s)")
        print(f"  burst: baseline, events committed {events / wrote:8.0f}/s (10 per transaction)")
        print(
            f"  burst: delivered {total} of {events * clients}: {total / (last - t0):8.0f} deliveries/s "
            f"({total / (last - t0) / clients:.0f} events/s per client) over {last - t0:.2f} s"
        )
        print("  " + line("burst: commit -> client receipt", lags))
        print("  " + line(f"quiet ({QUIET} single arrivals)", calm))
        missing = (events + QUIET) * clients - sum(len(r) for r in received)
        if missing:
            print(f"  MISSING: {missing} deliveries never arrived")


def _one_visit(engine, principal: auth.Principal):  # type: ignore[no-untyped-def]
    now = utcnow()
    with write_session(engine) as s:
        ((visit, _token),) = service.invite(
            s,
            principal,
            schemas.InviteIn(
                site=SITE,
                host_id=principal.user_id,
                visitors=[schemas.VisitorIn(name="Board Tester")],
                start=now,
                end=now + timedelta(hours=1),
                doors=[],
            ),
        )
    return visit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["sqlite", "postgresql"])
    p.add_argument("--visits", type=int, default=300)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    p.add_argument("--only", choices=["grant", "board"])
    p.add_argument("--listen", help=argparse.SUPPRESS)  # the board clients' child process
    args = p.parse_args()
    if args.listen:
        port, token, clients, events, out = args.listen.split(",")
        listeners_main(int(port), token, int(clients), int(events), out)
        return
    backends = [args.backend] if args.backend else ["sqlite"] + (["postgresql"] if pg_reachable() else [])
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if args.only != "board":
                check_in_to_grant(backend, args.visits, args.mqtt_url, Path(tmp) / backend)
            if args.only != "grant":
                board_stream(backend, args.events, args.clients, Path(tmp) / (backend + "-board"))


if __name__ == "__main__":
    main()
