"""Faults the gateway must come through with every controller in its desired state and nothing
granted past its release: a gateway killed with SIGKILL in the middle of a burst and started
again, a broker restart, a controller offline through the start of a window.

The gateway is `bookgate serve` in its own process, on the test's database (SQLite and
PostgreSQL), talking to simulated esp-rfid controllers through a real Mosquitto."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from access.decisions import note_credential
from access.models import Controller, Credential, Transition
from access.protocol import compact_hex
from access.windows import replan_user, set_windows
from bench.harness import free_port
from bms.models import Resource
from config import get_settings
from core.db import read_session, utcnow, write_session
from core.models import User
from drivers.esprfid import MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
from tests.drivers.conftest import mqtt_url, topic_prefix  # noqa: F401 - fixtures reused
from tests.drivers.helpers import MOSQUITTO, clear_retained, wait_until

pytestmark = pytest.mark.usefixtures("example_site")

BIN = Path(sys.executable).with_name("bookgate")
_serial = itertools.count()
ESPRFID = {"entrance-ctl": "entrance", "courts-ctl": "courts", "rooms-ctl": "rooms"}


class Gateway:
    """`bookgate serve` against a given database and broker; killable."""

    def __init__(self, tmp_path: Path, db_url: str, mqtt: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")} | {
            "BOOKGATE_VAR_DIR": str(tmp_path / "var"),
            "BOOKGATE_DATABASE_URL": db_url,
            "BOOKGATE_MQTT_URL": mqtt,
            "BOOKGATE_DISPATCH_LEASE_SECONDS": "3",
            # the key this test process writes the audit chain with: the gateway checks that chain
            "BOOKGATE_SECRET_KEY": get_settings().effective_secret_key(),
        }
        self.log = tmp_path / "gateway.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.env["BOOKGATE_PORT"] = str(free_port())
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--workers", "1"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def rig(engine, tmp_path, mqtt_url, topic_prefix) -> Iterator[tuple[SimulatorFleet, dict[str, str]]]:  # noqa: F811
    """The example site's three esp-rfid controllers, simulated on the broker under a fresh prefix."""
    devices = []
    with write_session(engine) as s:
        for key, name in ESPRFID.items():
            ctl = s.exec(select(Controller).where(Controller.key == key)).one()
            ctl.settings = {**ctl.settings, "topic": f"{topic_prefix}/{name}"}
            s.add(ctl)
            devices.append(DeviceConfig(f"{topic_prefix}/{name}", ctl.settings["doorip"], name, doors=2))
    fleet = SimulatorFleet(MqttSettings.from_url(mqtt_url), devices)
    fleet.start()
    assert fleet.wait_ready(10)
    try:
        yield fleet, {key: f"{topic_prefix}/{name}" for key, name in ESPRFID.items()}
    finally:
        fleet.stop()
        clear_retained(MqttSettings.from_url(mqtt_url), [f"{d.topic}/avty" for d in devices])


def _burst(engine, n: int, short: int) -> tuple[set[str], set[str]]:
    """`n` people with a badge and a window under way on court-1 (its grants are all due now);
    the first `short` windows end a few seconds from now. Returns (long badges, short badges)."""
    now = utcnow()
    with write_session(engine) as s:
        court = s.exec(select(Resource).where(Resource.key == "court-1")).one()
        serials = [next(_serial) for _ in range(n)]
        users = [User(email=f"burst{i}-{now.timestamp()}@example.com", name=f"Burst {i}") for i in serials]
        s.add_all(users)
        s.flush()
        badges = []
        for i, u in enumerate(users):
            badge = f"{0xB0000000 + serials[i]:08x}"
            s.add(Credential(user_id=u.id, kind="badge", format="uid", value=badge, compact=compact_hex(badge)))
            badges.append(compact_hex(badge))  # as the courts' MFRC522 reader spells it
        s.flush()
        for i, u in enumerate(users):
            end = now + (timedelta(seconds=8) if i < short else timedelta(hours=2))
            set_windows(
                s, "visit", 10_000 + serials[i], court.id, [u.id], now - timedelta(minutes=1), end, "badge", active=True
            )
    return set(badges[short:]), set(badges[:short])


def _pending(engine) -> int:
    with read_session(engine) as s:
        return s.exec(select(func.count()).select_from(Transition).where(Transition.status == "pending")).one()


def test_sigkill_in_the_middle_of_a_burst(engine, rig, tmp_path, mqtt_url):  # noqa: F811
    fleet, topics = rig
    courts = fleet[topics["courts-ctl"]]
    keep, short = _burst(engine, 600, 50)
    gateway = Gateway(tmp_path, engine.url.render_as_string(hide_password=False), mqtt_url)
    gateway.start()
    try:
        assert wait_until(lambda: len(courts.users) >= 60, 60, 0.005), gateway.log.read_text()[-3000:]
        gateway.kill()
        sent_before_kill = len(courts.users)
        assert _pending(engine) > 0, "the burst finished before the kill: nothing was tested"
        gateway.start()
        # The restarted gateway re-syncs the controller (its retained 'online') and finishes the
        # rows the dead one had claimed once their lease runs out.
        assert wait_until(lambda: set(courts.users) == keep | short or set(courts.users) == keep, 60), (
            f"{len(courts.users)} cards held, {len(keep | short)} wanted"
        )
        assert wait_until(lambda: set(courts.users) == keep, 30), "short windows were not revoked at their end"
        assert wait_until(lambda: _pending(engine) == len(keep), 30)  # only the revokes at the long ends remain
        with read_session(engine) as s:
            failed = s.exec(select(func.count()).select_from(Transition).where(Transition.status == "failed")).one()
        assert failed == 0 and sent_before_kill < len(keep)
    finally:
        gateway.stop()


@pytest.fixture
def own_broker(tmp_path) -> Iterator[tuple[str, callable]]:
    """A Mosquitto of our own on a free port, which the test may stop and start again."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("no mosquitto binary to restart")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(
            subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        time.sleep(0.3)

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)

    start()
    try:
        yield f"mqtt://127.0.0.1:{port}", (start, stop)
    finally:
        stop()


def test_broker_restart_and_a_controller_offline_through_the_start(engine, tmp_path, own_broker, topic_prefix):  # noqa: F811
    url, (start_broker, stop_broker) = own_broker
    with write_session(engine) as s:
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        ctl.settings = {**ctl.settings, "topic": f"{topic_prefix}/courts"}
        s.add(ctl)
        doorip = ctl.settings["doorip"]
    fleet = SimulatorFleet(MqttSettings.from_url(url), [DeviceConfig(f"{topic_prefix}/courts", doorip, "courts")])
    fleet.start()
    assert fleet.wait_ready(10)
    courts = fleet[f"{topic_prefix}/courts"]
    gateway = Gateway(tmp_path, engine.url.render_as_string(hide_password=False), url)
    gateway.start()
    try:
        keep, _ = _burst(engine, 20, 0)
        assert wait_until(lambda: set(courts.users) == keep, 60), gateway.log.read_text()[-3000:]

        # The broker goes away; meanwhile ten more people get a window under way, five lose theirs.
        stop_broker()
        more, _ = _burst(engine, 10, 0)
        gone = set(sorted(keep)[:5])
        with write_session(engine) as s:
            for cred in s.exec(select(Credential).where(col(Credential.compact).in_(gone))).all():
                cred.revoked_at = utcnow()
                s.add(cred)
                s.flush()
                note_credential(s, cred.id)
                replan_user(s, cred.user_id, utcnow())
        time.sleep(1.0)
        start_broker()
        want = (keep - gone) | more
        assert wait_until(lambda: set(courts.users) == want, 60), (len(courts.users), len(want))

        # The controller drops off the network through the start of a new window, then returns.
        courts.go_offline()
        late, _ = _burst(engine, 5, 0)
        time.sleep(1.0)
        assert not (late & set(courts.users))
        courts.come_back()
        assert wait_until(lambda: set(courts.users) == want | late, 60), "no re-sync when the controller came back"
    finally:
        gateway.stop()
        fleet.stop()
