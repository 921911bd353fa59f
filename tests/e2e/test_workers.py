"""`bookgate serve --workers 2` in its own process, on the test's database (SQLite and PostgreSQL),
pushing grants to a simulated esp-rfid controller through a real Mosquitto: both workers answer,
one only runs the drivers and the clock, a booking taken by the other is dispatched at once (the
safety-net poll is set to a minute), and when the leader is killed another worker takes over."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from access.models import Controller
from bench.harness import free_port
from config import get_settings
from core.db import utcnow, write_session
from drivers.esprfid import MqttSettings, codec
from drivers.esprfid.simulator import DeviceConfig, SimulatedController, SimulatorFleet
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import wait_until

pytestmark = pytest.mark.usefixtures("example_site")

BIN = Path(sys.executable).with_name("bookgate")
ALL_DAY = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class Node:
    def __init__(self, proc: subprocess.Popen, base: str, var: Path, log: Path) -> None:
        self.proc, self.base, self.var, self.log = proc, base, var, log

    def workers(self) -> list[int]:
        return [p for p in _children(self.proc.pid) if _alive(p) and self._is_worker(p)]

    @staticmethod
    def _is_worker(pid: int) -> bool:
        # uvicorn's spawned workers (multiprocessing's resource tracker is a child too)
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()

    def leader(self) -> int | None:
        """The pid named in the lock file, if that process is alive and the lock is held."""
        lock = self.var / "leader.lock"
        try:
            pid = int(lock.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid and _alive(pid) and not _lock_free(lock) else None

    def call(self, method: str, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
        # a new connection per request: a stopped worker holds no kept-alive one
        with httpx.Client(base_url=self.base, timeout=10) as c:
            return c.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def node(engine, make_user, tmp_path, mqtt_url, topic_prefix) -> Iterator[tuple[Node, SimulatedController, dict]]:  # noqa: F811
    with write_session(engine) as s:
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        ctl.settings = {**ctl.settings, "topic": f"{topic_prefix}/courts"}
        s.add(ctl)
        doorip = ctl.settings["doorip"]
    fleet = SimulatorFleet(MqttSettings.from_url(mqtt_url), [DeviceConfig(f"{topic_prefix}/courts", doorip, "courts")])
    fleet.start()
    assert fleet.wait_ready(10)
    device = fleet[f"{topic_prefix}/courts"]
    admin, apw = make_user({"role": "admin"})
    residents = [make_user({"role": "resident", "site": "les-tilleuls"}) for _ in range(3)]
    port = free_port()
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")} | {
        "BOOKGATE_VAR_DIR": str(var),
        "BOOKGATE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BOOKGATE_MQTT_URL": mqtt_url,
        # the key this test process writes the audit chain with: the workers check that chain
        "BOOKGATE_SECRET_KEY": get_settings().effective_secret_key(),
        "BOOKGATE_PORT": str(port),
        "BOOKGATE_DISPATCH_EVERY_SECONDS": "60",  # pushes must come from wake-ups, not the poll
    }
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [str(BIN), "serve", "--workers", "2"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    n = Node(proc, f"http://127.0.0.1:{port}", var, log)
    try:

        def ready() -> bool:
            try:
                return n.call("GET", "/readyz").status_code == 200 and len(n.workers()) == 2 and n.leader() is not None
            except httpx.HTTPError:
                return False

        assert wait_until(ready, 60, 0.1), log.read_text()[-3000:]
        heads = {}
        for who, user, password in [("admin", admin, apw)] + [(str(i), u, p) for i, (u, p) in enumerate(residents)]:
            r = n.call("POST", "/api/v1/auth/token", data={"username": user.email, "password": password})
            assert r.status_code == 200, r.text
            heads[who] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = n.call("PATCH", "/api/v1/resources/court-1/rules", heads["admin"], json={"opening_hours": ALL_DAY})
        assert r.status_code == 200, r.text
        for i, (u, _) in enumerate(residents):
            heads[f"id{i}"] = u.id  # type: ignore[assignment]
        yield n, device, heads
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        fleet.stop()


_hour = iter(range(2, 200))


def _book(n: Node, heads: dict, who: int, badge: str) -> None:
    """Resident `who` gets `badge` and books court-1 (its grant is due at once): one adduser."""
    r = n.call(
        "POST", f"/api/v1/users/{heads[f'id{who}']}/credentials", heads["admin"], json={"kind": "badge", "value": badge}
    )
    assert r.status_code in (200, 201), r.text
    start = (utcnow() + timedelta(hours=next(_hour))).replace(minute=0, second=0, microsecond=0)
    r = n.call(
        "POST",
        "/api/v1/reservations",
        heads[str(who)],
        json={"resource": "court-1", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    )
    assert r.status_code == 201, r.text


def _through(n: Node, pid: int, fn) -> None:  # type: ignore[no-untyped-def]
    """Run `fn` while every worker but `pid` is stopped, so `pid` serves its requests."""
    others = [p for p in n.workers() if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        fn()
    finally:
        for p in others:
            os.kill(p, signal.SIGCONT)


def test_two_workers_one_leader_pokes_and_takeover(node):
    n, device, heads = node
    adds: list[str] = []
    handle = device.handle_command

    def spy(payload: bytes) -> None:
        data = codec.loads(payload)
        if data.get("cmd") == "adduser":
            adds.append(str(data.get("uid")))
        handle(payload)

    device.handle_command = spy  # type: ignore[method-assign]
    leader = n.leader()
    assert leader is not None
    assert len([p for p in n.workers() if p != leader]) == 1  # one follower

    # The follower takes the booking; the leader, stopped meanwhile, dispatches it as soon as it
    # runs again: the follower's commit poked it (its own poll would wait a minute).
    os.kill(leader, signal.SIGSTOP)
    try:
        _book(n, heads, 0, "b1b1b1b1")  # the follower is the only one running
        time.sleep(0.3)
        assert "b1b1b1b1" not in device.users  # nobody else sent it
    finally:
        os.kill(leader, signal.SIGCONT)
    assert wait_until(lambda: "b1b1b1b1" in device.users, 5, 0.05), n.log.read_text()[-3000:]

    # The leader answers too, and its own commit wakes its dispatcher.
    _through(n, leader, lambda: _book(n, heads, 1, "b2b2b2b2"))
    assert wait_until(lambda: "b2b2b2b2" in device.users, 5, 0.05)
    time.sleep(1.0)
    assert adds.count("b1b1b1b1") == 1 and adds.count("b2b2b2b2") == 1, adds  # one dispatcher, one driver

    # The leader dies: another worker takes the lock and the drivers, and grants flow again.
    os.kill(leader, signal.SIGKILL)
    assert wait_until(lambda: n.leader() not in (None, leader), 20, 0.1), n.log.read_text()[-3000:]
    assert wait_until(lambda: n.call("GET", "/healthz").status_code == 200, 10, 0.1)
    _book(n, heads, 2, "b3b3b3b3")
    assert wait_until(lambda: "b3b3b3b3" in device.users, 10, 0.05), n.log.read_text()[-3000:]
    assert adds.count("b3b3b3b3") == 1, adds


def test_a_commit_made_while_a_worker_becomes_the_leader_is_dispatched_at_once(
    engine, example_site, make_user, tmp_path, monkeypatch
):
    """Taking over, a worker starts its clock (which looks once) before its own commits and the
    poke socket reach that clock: a booking committed in between must not wait for the poll."""
    from types import SimpleNamespace

    from access.decisions import note_credential
    from access.models import Credential
    from access.protocol import Grant
    from access.windows import set_windows
    from bms.models import Resource
    from bookgate import workers
    from config import Settings
    from drivers.ble.settings import BleSettings
    from drivers.osdp.settings import OsdpSettings
    from drivers.registry import REGISTRY
    from tests.drivers.test_registry import FakeDriver, _fake_family

    built: dict[str, FakeDriver] = {}
    registry = REGISTRY.with_family(_fake_family("osdp", OsdpSettings, built, {})).with_family(
        _fake_family("ble", BleSettings, built, {})
    )
    user, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    with write_session(engine) as s:
        cred = Credential(user_id=user.id, kind="badge", format="uid", value="04c0ffee", compact="4c0ffee")
        s.add(cred)
        s.flush()
        note_credential(s, cred.id)
        parking = s.exec(select(Resource).where(Resource.key == "visitor-parking")).one()
    real_drivers, real_clock = workers.start_drivers, workers.start_clock

    def drivers(engine, settings, decisions, listeners=None):  # type: ignore[no-untyped-def]
        return real_drivers(engine, settings, decisions, listeners=listeners, registry=registry)

    def clock_then_a_booking(*args, **kwargs):  # type: ignore[no-untyped-def]
        clock = real_clock(*args, **kwargs)
        # the clock's first look is over (its next run is the poll's, a minute away) ...
        polled = lambda: clock.scheduler.get_job("dispatch").next_run_time > utcnow() + timedelta(seconds=30)  # noqa: E731
        assert wait_until(polled, 5)
        # ... and a commit lands before this worker's commits or pokes reach the new clock
        now = utcnow()
        with write_session(engine) as s:
            set_windows(s, "visit", 41, parking.id, [user.id], now, now + timedelta(hours=1), "badge", active=True)
        return clock

    monkeypatch.setattr(workers, "start_drivers", drivers)
    monkeypatch.setattr(workers, "start_clock", clock_then_a_booking)
    settings = Settings(
        _env_file=None, var_dir=tmp_path / "var", mqtt_url="", delivery=False, dispatch_every_seconds=60
    )
    app = SimpleNamespace(state=SimpleNamespace(entry_listeners=None, driver_host=None))
    services = workers.NodeServices(app, engine, settings, None, tmp_path / "leader.lock")  # type: ignore[arg-type]
    services.start()
    try:
        assert services.leader
        sent = lambda: [c for d in built.values() for _, c in d.sent]  # noqa: E731
        assert wait_until(lambda: any(isinstance(c, Grant) for c in sent()), 5), sent()
    finally:
        services.stop()
