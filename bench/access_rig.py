"""Shared plumbing of the access benchmarks: a site of esp-rfid controllers, badge holders, the
simulated fleet in its own process, the gateway's driver host, lateness statistics."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

import schedules.dispatch as dispatch
from access.models import Controller, Credential, Door, DoorResource
from access.protocol import compact_hex
from bench.common import pg_reachable, site_document
from bms.models import Resource
from bookgate.controllers import DriverHost, start_drivers
from bookgate.provision import apply_site_file
from config import Settings
from config.site import parse_site_document
from core.audit import SYSTEM
from core.db import read_session, utcnow
from core.models import User
from drivers.esprfid.connection import MqttSettings, make_client
from drivers.esprfid.simulator import benchmark_ip

MQTT_URL = "mqtt://127.0.0.1:1883"


def mqtt_reachable(url: str = MQTT_URL) -> bool:
    settings = MqttSettings.from_url(url)
    try:
        with socket.create_connection((settings.host, settings.port), timeout=1):
            return True
    except OSError:
        return False


def backends(choice: str) -> Iterator[str]:
    """The backends to run, `both` meaning SQLite and PostgreSQL when it is reachable."""
    for backend in ["sqlite", "postgresql"] if choice == "both" else [choice]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        yield backend


def new_prefix() -> str:
    """A topic prefix of its own per run: no two runs (or tests) see each other's messages."""
    return f"bgbench/{secrets.token_hex(5)}"


def device_topic(prefix: str, i: int) -> str:
    """The i-th device (0-based) as `simulator.build_configs(count=..., prefix=...)` names it."""
    return f"{prefix}/{i + 1:04d}"


# --------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class Site:
    resource_ids: list[int]  # resource i is served by door i on controller i
    door_ids: list[int]
    controller_keys: list[str]
    topics: list[str]


def esprfid_site_document(n: int, prefix: str) -> dict:
    """n rooms, each with its own door on its own esp-rfid controller (topic and doorip as the
    simulated fleet of the same prefix uses them)."""
    per_venue = min(n, 100)
    doc = site_document(max(1, n // per_venue), per_venue)
    site = doc["sites"][0]
    resources = [r["key"] for v in site["venues"] for r in v["resources"]]
    site["controllers"] = [
        {
            "key": f"ctl-{i + 1:04d}",
            "name": f"Reader {i + 1}",
            "driver": "esprfid",
            "settings": {"topic": device_topic(prefix, i), "doorip": benchmark_ip(i)},
        }
        for i in range(len(resources))
    ]
    site["doors"] = [
        {"key": f"door-{i + 1:04d}", "name": f"Door {i + 1}", "controller": f"ctl-{i + 1:04d}", "resources": [key]}
        for i, key in enumerate(resources)
    ]
    return doc


def populate_site(engine: Engine, n: int, prefix: str) -> Site:
    """Imported the way an operator imports a site file (`apply_site_file`)."""
    apply_site_file(engine, parse_site_document(esprfid_site_document(n, prefix)), SYSTEM)
    with read_session(engine) as s:
        resource_by_key = dict(s.exec(select(Resource.key, Resource.id)).all())
        rows = s.exec(
            select(Door.key, Door.id, DoorResource.resource_id, Controller.key, Controller.settings)
            .join(DoorResource, DoorResource.door_id == Door.id)
            .join(Controller, Controller.id == Door.controller_id)
            .order_by(Door.key)
        ).all()
    assert len(rows) == n == len(resource_by_key), (len(rows), n, len(resource_by_key))
    return Site(
        resource_ids=[r[2] for r in rows],
        door_ids=[r[1] for r in rows],
        controller_keys=[r[3] for r in rows],
        topics=[r[4]["topic"] for r in rows],
    )


def badge_uid(i: int) -> str:
    """A canonical 4-byte card serial whose bytes are all 0x10 or more, so that the MFRC522
    spelling the simulated readers use (no leading zeros) is the same string: the benchmarks
    compare what devices hold against these values."""
    digits = []
    for _ in range(3):
        i, rest = divmod(i, 240)
        digits.append(0x10 + rest)
    return bytes([0xB0, *reversed(digits)]).hex()


def add_badge_holders(engine: Engine, n: int, *, batch: int = 20_000) -> list[tuple[int, int, str]]:
    """n people with one badge each, written in bulk (as an HR import would); (user, credential, uid)."""
    out: list[tuple[int, int, str]] = []
    now = utcnow()
    tag = secrets.token_hex(3)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        users = [
            {
                "email": f"holder{i}-{tag}@example.com",
                "name": f"Holder {i}",
                "locale": "en",
                "is_active": True,
                "created_at": now,
            }
            for i in range(lo, hi)
        ]
        with engine.begin() as conn:
            uids = conn.execute(insert(User).returning(User.id, sort_by_parameter_order=True), users).scalars().all()
            creds = [
                {
                    "user_id": uid,
                    "kind": "badge",
                    "format": "uid",
                    "value": badge_uid(i),
                    "compact": compact_hex(badge_uid(i)),
                    "label": "",
                    "created_at": now,
                }
                for uid, i in zip(uids, range(lo, hi), strict=True)
            ]
            cids = (
                conn.execute(insert(Credential).returning(Credential.id, sort_by_parameter_order=True), creds)
                .scalars()
                .all()
            )
        out += [(u, c, badge_uid(i)) for u, c, i in zip(uids, cids, range(lo, hi), strict=True)]
    return out


# --------------------------------------------------------------------------- the simulated fleet


class Fleet:
    """The simulated controllers, run by `bench.esprfid_fleet` in a process of their own."""

    def __init__(self, url: str, prefix: str, count: int) -> None:
        self.url, self.prefix, self.count = url, prefix, count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.esprfid_fleet", "--mqtt-url", url, "--prefix", prefix, "--count", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise RuntimeError("simulated fleet did not connect to the broker")

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("simulated fleet exited")
        return json.loads(line)

    def _ask(self, request: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._read()

    def reset(self) -> None:
        self._ask("reset")

    def dump(self) -> dict[str, dict]:
        """Every device's cards ({uid: [validsince, validuntil, acctype]}) and receipts ([t, cmd, uid])."""
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            self._ask(f"dump {f.name}")
            return json.loads(Path(f.name).read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask("quit")
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        clear_retained(self.url, [f"{device_topic(self.prefix, i)}/avty" for i in range(self.count)])


def clear_retained(url: str, topics: list[str]) -> None:
    """Leave the shared broker as we found it: an empty retained payload deletes a retained message."""
    settings = MqttSettings.from_url(url)
    client = make_client(settings, client_id_prefix="bgbench-cleanup")
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in sorted(set(topics))]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def fleet(url: str, prefix: str, count: int) -> Iterator[Fleet]:
    f = Fleet(url, prefix, count)
    try:
        yield f
    finally:
        f.close()


# --------------------------------------------------------------------------- the gateway's driver


def start_host(engine: Engine, url: str, n: int, timeout: float = 300.0) -> tuple[DriverHost, float, int]:
    """The gateway's esp-rfid driver host as the server starts it, once it has handled every
    controller's announcement (a full re-sync each: the storm a restart of the gateway causes).
    Returns the host, how long the storm took, and how many controllers it left degraded."""
    t0 = time.perf_counter()
    host = start_drivers(engine, Settings(mqtt_url=url, _env_file=None))
    if host is None:
        raise RuntimeError("no esp-rfid controller in the database")
    deadline = time.monotonic() + timeout
    quiet_since = None
    settled = (Controller.last_sync.is_not(None)) | (Controller.state == "degraded")  # type: ignore[union-attr]
    while time.monotonic() < deadline:
        with read_session(engine) as s:
            done = s.exec(select(func.count()).select_from(Controller).where(settled)).scalar_one()
        if done >= n and host.reports.qsize() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                with read_session(engine) as s:
                    degraded = s.exec(
                        select(func.count()).select_from(Controller).where(Controller.state == "degraded")
                    ).scalar_one()
                return host, time.perf_counter() - t0 - 1.0, degraded
        else:
            quiet_since = None
        time.sleep(0.2)
    host.stop()
    raise RuntimeError(f"the driver host did not re-sync the {n} controllers within {timeout:.0f} s")


class LogTally(logging.Handler):
    """Counts warnings by message shape instead of printing a thousand lines of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        shape = re.sub(r"\d+", "N", record.getMessage())[:120]
        self.counts[f"{record.name}: {shape}"] += 1

    def report(self) -> list[str]:
        return [f"{n} x {shape}" for shape, n in self.counts.most_common(8)]


def install_tally() -> LogTally:
    """One tally on the root logger (replacing the default stderr output), emptied on each call."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogTally):
            handler.counts.clear()
            return handler
    tally = LogTally()
    root.addHandler(tally)
    root.setLevel(logging.WARNING)
    return tally


@dataclass(frozen=True)
class Call:
    began: float  # wall clock
    seconds: float
    size: int  # len() of what it returned, -1 if it has none
    result: object = None


@contextmanager
def phase_timer() -> Iterator[dict[str, list[Call]]]:
    """Time the dispatcher's phases by wrapping its module functions (restored afterwards)."""
    calls: dict[str, list[Call]] = defaultdict(list)
    originals = {name: getattr(dispatch, name) for name in ("claim_due", "commands_for", "_finish")}

    def wrap(name: str, fn: Callable) -> Callable:
        def timed(*a, **kw):  # type: ignore[no-untyped-def]
            began, t = time.time(), time.perf_counter()
            out = fn(*a, **kw)
            calls[name].append(Call(began, time.perf_counter() - t, len(out) if out is not None else -1, out))
            return out

        return timed

    for name, fn in originals.items():
        setattr(dispatch, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(dispatch, name, fn)


def seconds(calls: list[Call]) -> float:
    return sum(c.seconds for c in calls)


def first_receipts(dump: dict[str, dict], cmd: str, since: float) -> dict[tuple[str, str], float]:
    """(topic, uid) -> wall time the device first received `cmd` for that card at or after `since`."""
    out: dict[tuple[str, str], float] = {}
    for topic, dev in dump.items():
        for t, c, uid in dev["receipts"]:
            if c == cmd and t >= since and (topic, uid) not in out:
                out[(topic, uid)] = t
    return out


# --------------------------------------------------------------------------- where the machine's CPU went


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


class CpuShares:
    """CPU seconds each named process (or group: the broker, PostgreSQL's backends) used between
    `start` and `stop`, beside the whole machine's: where a burst's CPU went."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        self.processes = {k: list(v) for k, v in processes.items()}
        self.processes.setdefault("broker", _pids_named("mosquitto"))
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        self.machine: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self.processes.setdefault("PostgreSQL", _pids_named("postgres"))
        self.before = {k: sum(_process_cpu(p) for p in v) for k, v in self.processes.items()}
        self.machine = _machine_busy()

    def stop(self) -> None:
        self.after = {k: sum(_process_cpu(p) for p in v) for k, v in self.processes.items()}
        busy, total = _machine_busy()
        self.machine = (busy - self.machine[0], total - self.machine[1])

    def report(self) -> str:
        shares = ", ".join(f"{k} {self.after[k] - self.before[k]:.2f}" for k in self.processes)
        busy, total = self.machine
        return f"{shares}; the machine {busy:.2f} of {total:.2f} CPU-seconds busy ({busy / max(total, 1e-9):.0%})"
