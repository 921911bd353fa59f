"""The on-site stream: a connected client receives arrivals and departures as server-sent events,
from a real server; on PostgreSQL also from a second server process (another gateway node) that
did not make the change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.harness import free_port, serve
from tests.drivers.helpers import wait_until
from tests.vms.conftest import SITE, Desk

BIN = Path(sys.executable).with_name("bookgate")


class Listener:
    """Reads an SSE stream on a thread and keeps (event, data) pairs."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, dict]] = []
        self.status: int | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self._thread = threading.Thread(target=self._read, args=(base, headers), daemon=True)
        self._thread.start()

    def _read(self, base: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream(
                "GET", f"{base}/api/v1/visits/stream", params={"site": SITE}, headers=headers
            ) as r:
                self.status = r.status_code
                event = None
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event:
                        self.events.append((event, json.loads(line.split(":", 1)[1])))
                        event = None
        except httpx.HTTPError:
            pass  # closed by the test

    def seen(self, kind: str, visit_id: int) -> bool:
        return any(k == kind and d["visit_id"] == visit_id for k, d in self.events)

    def close(self) -> None:
        self._client.close()


def _arrive_and_leave(desk: Desk, listener: Listener) -> None:
    visit = desk.invite(visitors=[{"name": "Stream <b>Tester</b>", "company": "Acme"}])
    assert wait_until(lambda: listener.status == 200, timeout=10)
    assert desk.scan(desk.token(visit)).status_code == 200
    assert wait_until(lambda: listener.seen("arrival", visit["id"]), timeout=10), listener.events
    arrival = next(d for k, d in listener.events if k == "arrival" and d["visit_id"] == visit["id"])
    assert arrival["name"] == "Stream <b>Tester</b>" and arrival["host"] == "Hugo Host"
    desk.client.post(f"/api/v1/visits/{visit['id']}/check-out", headers=desk.reception)
    assert wait_until(lambda: listener.seen("departure", visit["id"]), timeout=10), listener.events


def test_a_connected_client_receives_arrivals_and_departures(desk: Desk, app):
    app.state.visit_feed.ping = 1  # the server notices the test's client leave within a second
    with serve(app) as base:
        r = httpx.get(f"{base}/api/v1/visits/stream", params={"site": SITE}, headers=desk.host)
        assert r.status_code == 403  # residents have no board
        listener = Listener(base, desk.reception)
        try:
            _arrive_and_leave(desk, listener)
        finally:
            listener.close()


@pytest.fixture
def second_node(engine, tmp_path) -> Iterator[str]:
    """`bookgate serve` in its own process on the same PostgreSQL database: another node."""
    if engine.dialect.name != "postgresql":
        pytest.skip("several nodes share a PostgreSQL database")
    from config import get_settings

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")} | {
        "BOOKGATE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BOOKGATE_VAR_DIR": str(tmp_path / "node2"),
        "BOOKGATE_SECRET_KEY": get_settings().effective_secret_key(),
        "BOOKGATE_SCHEDULER": "false",
        "BOOKGATE_PORT": str(port),
    }
    log = (tmp_path / "node2.log").open("wb")
    proc = subprocess.Popen([str(BIN), "serve", "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(up, timeout=30, interval=0.1), (tmp_path / "node2.log").read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_second_node_streams_what_the_first_wrote(desk: Desk, second_node):
    listener = Listener(second_node, desk.reception)
    try:
        _arrive_and_leave(desk, listener)  # written through this process, heard on the other
    finally:
        listener.close()


def test_an_event_committed_late_is_streamed_once(engine, desk: Desk):
    """Ids are handed out at insert and seen at commit: a transaction that commits after a later
    one has its event found again among the last seconds, and sent once (PostgreSQL: SQLite's
    writers never overlap)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL lets two writers overlap")
    from core.db import open_session, read_session, utcnow, write_session
    from vms.events import Cursor, head
    from vms.models import Visit, VisitEvent

    visit = desk.invite()
    with read_session(engine) as s:
        cursor = Cursor(last=head(s))
        site_id = s.get(Visit, visit["id"]).site_id
    slow = open_session(engine, write=True)
    early = VisitEvent(site_id=site_id, visit_id=visit["id"], kind="arrival")
    slow.add(early)
    slow.flush()  # takes its id now, commits later
    with write_session(engine) as s:
        s.add(VisitEvent(site_id=site_id, visit_id=visit["id"], kind="departure"))
    with read_session(engine) as s:
        first = [e.kind for e in cursor.read(s, utcnow())]
    slow.commit()
    slow.close()
    with read_session(engine) as s:
        second = [e.kind for e in cursor.read(s, utcnow())]
        third = [e.kind for e in cursor.read(s, utcnow())]
    assert (first, second, third) == (["departure"], ["arrival"], [])
