"""A node's services: what runs once per node (drivers, the clock and its dispatcher, outbox
delivery), whether the node is one process or `bookgate serve --workers N`.

With several workers, the one holding an exclusive lock on `var_dir/leader.lock` (the kernel
drops it when its process dies) is the leader and runs those services; the others serve HTTP
only and try the lock again every second, so one of them takes over. A commit in a follower
that wrote a transition or an outbox row pokes the leader through a unix datagram socket in the
var dir: its dispatcher or delivery worker wakes at once, not at its safety-net poll.

What every worker runs itself: the online-decision index (the decisions route reads it), the
visit feed, and the audit checkpoint keeper, which seals its own worker's commits at once and
shares the work with the others through the checkpoint file's lock (core.audit).

Engine listeners must not be added while other threads commit (SQLAlchemy iterates them
unlocked): every listener a leader needs is installed when the worker starts, before any
request, so taking over later adds none.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Connection, Engine

from access.decisions import DecisionIndex
from access.transitions import NEXT_DUE
from bookgate.controllers import DriverHost, start_drivers
from config import Settings
from core import db, outbox
from schedules.clock import Clock, start_clock
from schedules.delivery import DeliveryWorker

log = logging.getLogger("bookgate.workers")

LOCK_FILE = "leader.lock"
POKE_FILE = "leader.sock"
SETTINGS_ENV = "BOOKGATE_WORKER_SETTINGS"  # the parent's settings, as JSON, for its workers
RETRY_SECONDS = 1.0
# uvicorn kills a worker that does not answer its supervisor's ping within this many seconds
# (5 by default): a worker still importing the app on a loaded machine must not be taken for hung.
HEALTHCHECK_SECONDS = 60
_DUE, _OUTBOX = b"D", b"O"


class LeaderLock:
    """An exclusive flock held for the life of the process (or until `release`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def poke_address(var_dir: Path) -> str:
    """The leader's socket: a file in the (private) var dir; an abstract name when that path is
    too long for a unix socket address."""
    path = str(var_dir.resolve() / POKE_FILE)
    if len(path.encode()) < 100:
        return path
    return "\0bookgate-" + hashlib.sha256(path.encode()).hexdigest()[:32]


class Poker:
    """A follower's side: one datagram per commit that needs the leader; never blocks, never fails
    the commit (a lost poke waits for the safety-net poll)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def _send(self, message: bytes) -> None:
        try:
            self._sock.sendto(message, self.address)
        except OSError:
            pass  # no leader right now, or its queue is full

    def due(self, at: datetime) -> None:
        self._send(_DUE + struct.pack("!d", at.timestamp()))

    def outbox(self) -> None:
        self._send(_OUTBOX)

    def close(self) -> None:
        self._sock.close()


class PokeReceiver:
    """The leader's side: a thread reading pokes and waking the dispatcher or the delivery worker."""

    def __init__(self, address: str, clock: Clock | None, delivery: DeliveryWorker | None) -> None:
        self.address = address
        self.clock = clock
        self.delivery = delivery
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if not address.startswith("\0"):
            try:
                os.unlink(address)  # a dead leader's; we hold the lock, nobody else binds here
            except FileNotFoundError:
                pass
        self._sock.bind(address)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-pokes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                if message[:1] == _DUE and len(message) == 9 and self.clock is not None:
                    (ts,) = struct.unpack("!d", message[1:])
                    self.clock.wake(datetime.fromtimestamp(ts, UTC))
                elif message == _OUTBOX and self.delivery is not None:
                    self.delivery.wake()
            except Exception:
                log.exception("a poke from another worker failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        if not self.address.startswith("\0"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass


class NodeServices:
    """Starts and stops the once-per-node services for the app's lifespan. ``lock_path`` None:
    this process is the whole node and runs them (one worker, tests); else the leader lock
    decides, as described above."""

    def __init__(
        self,
        app: FastAPI,
        engine: Engine,
        settings: Settings,
        decisions: DecisionIndex,
        lock_path: Path | None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.settings = settings
        self.decisions = decisions
        self.lock = LeaderLock(lock_path) if lock_path is not None else None
        self.host: DriverHost | None = None
        self.clock: Clock | None = None
        self.delivery: DeliveryWorker | None = None
        self._dormant: DeliveryWorker | None = None
        self._receiver: PokeReceiver | None = None
        self._poker: Poker | None = None
        self._mutex = threading.Lock()
        self._stopping = threading.Event()
        self._follower: threading.Thread | None = None
        self._listening = False

    @property
    def leader(self) -> bool:
        return self.clock is not None

    def install(self) -> None:
        """Several workers: every listener a leader needs, before any thread of ours begins a
        transaction (the app's lifespan calls this first)."""
        if not self.settings.scheduler or self.lock is None or self._listening:
            return
        address = poke_address(self.settings.ensure_var_dir())
        self._poker = Poker(address)
        # Every listener a leader needs, now: ours first (it reads the outbox flag that the
        # delivery worker's checkin listener then clears), then the delivery worker's own.
        db.listen(self.engine, "commit", self._on_commit)
        db.listen(self.engine, "rollback", self._on_rollback)
        db.listen(self.engine, "checkin", self._on_checkin)
        if self.settings.delivery:
            self._dormant = DeliveryWorker(self.engine, self.settings)
            # the same bound methods its start() registers: registering them again then is a no-op
            db.listen(self.engine, "rollback", self._dormant._on_rollback)
            db.listen(self.engine, "checkin", self._dormant._on_checkin)
        self._listening = True

    def start(self) -> None:
        if not self.settings.scheduler:
            return
        if self.lock is None:
            self._lead(listen=True)
            return
        self.install()
        if self.lock.try_acquire():
            self._lead(listen=False)
        else:
            log.info("worker %s serves HTTP; another worker of this node runs the drivers and the clock", os.getpid())
            self._follower = threading.Thread(target=self._follow, name="leader-lock", daemon=True)
            self._follower.start()

    def _follow(self) -> None:
        assert self.lock is not None
        while not self._stopping.wait(RETRY_SECONDS):
            if self.lock.try_acquire():
                with self._mutex:
                    if self._stopping.is_set():
                        return
                    log.info("worker %s takes over the drivers and the clock", os.getpid())
                    try:
                        self._lead(listen=False)
                    except Exception:
                        log.exception("taking over failed; this worker stays a follower")
                        self._stop_services()
                        self.lock.release()  # another worker (or this one's replacement) may do better
                return

    def _lead(self, *, listen: bool) -> None:
        s = self.settings
        host = start_drivers(self.engine, s, self.decisions, listeners=self.app.state.entry_listeners)
        self.host = host
        self.app.state.driver_host = host
        clock = start_clock(
            self.engine,
            expiry_every_seconds=s.expiry_every_seconds,
            send_many=host.send_many if host else None,
            dispatch_every_seconds=s.dispatch_every_seconds,
            reconcile=host.reconcile_all if host else None,
            supervise=host.supervise if host else None,
            reconcile_every_seconds=s.reconcile_every_seconds,
            lease_seconds=s.dispatch_lease_seconds,
            pipeline=s.dispatch_pipeline,
            listen=listen,
        )
        self.clock = clock  # from here this worker's commits wake its own clock, not the socket
        if s.delivery:
            self.delivery = (self._dormant or DeliveryWorker(self.engine, s)).start()
        if self.lock is not None:
            self._receiver = PokeReceiver(poke_address(s.var_dir), clock, self.delivery)
            # A commit made while this worker was becoming the leader (after the clock's first
            # look, before its commits or the socket reached the new clock) woke nobody: look once
            # more now that every path to the clock is in place, rather than at the safety-net poll.
            clock.wake(db.utcnow())
            if self.delivery is not None:
                self.delivery.wake()

    # -- listeners (several workers only), in the committing thread: trivial work only
    def _on_commit(self, conn: Connection) -> None:
        clock = self.clock
        if clock is not None:
            due = conn.info.pop(NEXT_DUE, None)
            if due is not None:
                clock.wake(due)

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(NEXT_DUE, None)

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        # after the commit, so the leader finds the rows when it looks
        if record is None or self.clock is not None or self._poker is None:
            return
        due = record.info.pop(NEXT_DUE, None)
        if due is not None:
            self._poker.due(due)
        if record.info.get(outbox.WRITTEN):
            self._poker.outbox()

    def _stop_services(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None
        if self.delivery is not None:
            self.delivery.stop()
            self.delivery = None
        if self.clock is not None:
            self.clock.shutdown(wait=True)
            self.clock = None
        if self.host is not None:
            self.host.stop()
            self.host = None
            self.app.state.driver_host = None

    def stop(self) -> None:
        with self._mutex:
            self._stopping.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        self._stop_services()
        if self._dormant is not None:
            self._dormant.stop()  # removes the listeners registered for it (stopping twice is harmless)
        if self._listening:
            mine = (("commit", self._on_commit), ("rollback", self._on_rollback), ("checkin", self._on_checkin))
            for name, fn in mine:
                db.unlisten(self.engine, name, fn)
        if self._poker is not None:
            self._poker.close()
        if self.lock is not None:
            self.lock.release()


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the supervising process dies, even by SIGKILL, rather
    than live on holding the port and the leader lock."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> FastAPI:
    """uvicorn's factory for each worker of `bookgate serve --workers N`: the parent's settings,
    migrations already applied by the parent, the node's leader lock."""
    from bookgate.app import create_app

    _die_with_parent()
    settings = Settings.model_validate(json.loads(os.environ[SETTINGS_ENV]))
    return create_app(settings, migrate_on_start=False, leader_lock=settings.ensure_var_dir() / LOCK_FILE)


class TcpConfig(uvicorn.Config):
    """uvicorn's settings, binding a TCP listener that names its protocol (see `serve_workers`);
    at module level, since the supervisor pickles it for each worker."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        return sock


def serve_workers(host: str, port: int, workers: int, **options: Any) -> None:
    """Run `worker_app` in `workers` processes behind one listening socket (uvicorn's supervisor),
    with TCP_NODELAY on every connection.

    uvicorn binds the shared socket without naming its protocol (proto 0), accepted connections
    inherit that, and asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP: every
    keep-alive response after the first then waited for the client's delayed ACK (about 40 ms on
    Linux; measured: /healthz at one connection 23 requests/s instead of over 1,000). The
    listening socket is re-wrapped with its protocol named, which the workers inherit."""
    from uvicorn.supervisors import Multiprocess

    config = TcpConfig(
        "bookgate.workers:worker_app",
        factory=True,
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
        workers=workers,
        host=host,
        port=port,
        **options,
    )
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
