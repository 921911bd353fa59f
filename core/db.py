"""Engine and sessions. SQLite: WAL, foreign keys, busy timeout, BEGIN IMMEDIATE for writes.

Read sessions begin DEFERRED so readers never queue behind writers; write sessions begin
IMMEDIATE so a write transaction holds SQLite's single writer lock from its first statement
(no late lock upgrade that would fail with SQLITE_BUSY). On PostgreSQL both are plain BEGIN.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Engine,
    String,
    Text,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    literal,
    select,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

log = logging.getLogger("core.db")

_WRITE_OPTION = "bookgate_write"
_GATE_PREHELD = "bookgate_gate_preheld"  # the unit of work took the writer gate before the first statement
_GATE_HELD = "bookgate_gate_held"
_ADMISSION: weakref.WeakKeyDictionary[Engine, threading.Semaphore | WriterGate] = weakref.WeakKeyDictionary()

# ---------------------------------------------------------------- transaction hooks
#
# SQLAlchemy's event registry may not change while another thread runs the same event: adding a
# commit listener while a driver thread commits raised "deque mutated during iteration" out of
# that commit. So each engine gets one listener per event at creation, and the parts that follow
# commits (the clock, the delivery worker, the audit keeper, a server's workers) register with
# `listen`/`unlisten` here: a registration swaps a tuple that the one listener reads whole.

HOOK_EVENTS = ("begin", "commit", "rollback", "checkin")
_HOOKS: weakref.WeakKeyDictionary[Engine, dict[str, tuple[Callable[..., Any], ...]]] = weakref.WeakKeyDictionary()
_HOOKS_LOCK = threading.Lock()


def _install_hooks(engine: Engine) -> dict[str, tuple[Callable[..., Any], ...]]:
    hooks: dict[str, tuple[Callable[..., Any], ...]] = dict.fromkeys(HOOK_EVENTS, ())
    for name in HOOK_EVENTS:

        def fire(*args: Any, _name: str = name) -> None:
            for fn in hooks[_name]:
                fn(*args)

        event.listen(engine, name, fire)
    _HOOKS[engine] = hooks
    return hooks


def listen(engine: Engine, name: str, fn: Callable[..., Any]) -> None:
    """Call `fn` on the engine's `name` event (one of `HOOK_EVENTS`), after those registered
    before it; registering the same function twice is a no-op. Safe while other threads commit."""
    if name not in HOOK_EVENTS:
        raise ValueError(f"no hook for {name!r}")
    with _HOOKS_LOCK:
        hooks = _HOOKS.get(engine)
        if hooks is None:  # an engine not made by make_engine: install before its first use
            hooks = _install_hooks(engine)
        if fn not in hooks[name]:
            hooks[name] = (*hooks[name], fn)


def listening(engine: Engine, name: str, fn: Callable[..., Any]) -> bool:
    hooks = _HOOKS.get(engine)
    return hooks is not None and fn in hooks.get(name, ())


def unlisten(engine: Engine, name: str, fn: Callable[..., Any]) -> None:
    """Undo `listen` (nothing if `fn` is not registered)."""
    with _HOOKS_LOCK:
        hooks = _HOOKS.get(engine)
        if hooks is not None:
            hooks[name] = tuple(f for f in hooks.get(name, ()) if f != fn)


# Request units of work in flight at once on PostgreSQL (see `write_admission`); SQLite admits one.
WRITE_CONCURRENCY = 16


class WriterGate:
    """SQLite's writers, one at a time, handed over at once: a lock among this process's threads,
    then an exclusive flock on a file beside the database among the processes sharing it
    (`serve --workers N`, a CLI command beside the server). Without it, writers of different
    processes meet only at SQLite's busy handler, which sleeps between tries (up to 100 ms each):
    a waiting writer then lets the lock sit idle, and at 10 clients over two workers the p95 of a
    booking was 730 ms against 160 ms with one. `acquire` takes the same arguments as a lock's."""

    POLL_S = 0.0002  # how often a process waiting for another's write looks again

    def __init__(self, lock_path: str | None) -> None:
        self._lock = threading.Lock()
        self._path = lock_path
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path or "", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        deadline = time.monotonic() + timeout if blocking and timeout >= 0 else None
        if not self._lock.acquire(blocking, timeout):
            return False
        if self._path is None:
            return True
        try:
            fd = self._file()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if not blocking or (deadline is not None and time.monotonic() >= deadline):
                        self._lock.release()
                        return False
                    time.sleep(self.POLL_S)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


def _sqlite_file(url: str) -> str | None:
    """The SQLite database's file, or None for one that lives in memory or behind a URI."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out; a naive datetime is a bug, not data."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(TypeDecorator):
    """JSON kept as text on every backend, so both databases store the same bytes."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def among(bind: Engine | Session, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN (values)` with the list as one parameter: on PostgreSQL `column = ANY(:values)`
    (an array), on SQLite `column IN (SELECT value FROM json_each(:values))` (a JSON array of
    numbers or strings). A list of hundreds of ids (a dispatcher's batch) is otherwise rendered as
    hundreds of parameters that SQLAlchemy builds and expands on every call, and psycopg parses
    again: a third of a burst batch's time on PostgreSQL, a quarter of its CPU on SQLite. The
    statement stays one cached compilation whatever the list's length."""
    values = list(values)
    if is_sqlite(bind):
        listed = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
        return cast(ColumnElement[bool], column.in_(select(listed.c.value)))
    return cast(ColumnElement[bool], column == any_(literal(values, type_=ARRAY(column.type))))


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file 0600 before SQLite does (it would follow the umask, often 0644), and
    tighten an existing one with its WAL and shared-memory files: it holds hashes and the audit trail."""
    path = _sqlite_file(url)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # no such directory, read-only place...: SQLite says so in its own words
    for name in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except (FileNotFoundError, PermissionError):
            pass


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the driver: we emit BEGIN ourselves.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA foreign_keys=ON",
                "PRAGMA busy_timeout=30000",
                "PRAGMA synchronous=NORMAL",
            ):
                cur.execute(pragma)
            cur.close()

        # Writers queue at the gate (this process's threads, then other processes) before asking
        # SQLite for its write lock: a clean hand-off, where SQLite's busy handler would sleep.
        database = _sqlite_file(url)  # a database in memory has one process only: no file lock
        gate = WriterGate(database + ".writer" if database else None)
        _ADMISSION[engine] = gate

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            options = conn.get_execution_options()
            if not options.get(_WRITE_OPTION):
                conn.exec_driver_sql("BEGIN DEFERRED")
                return
            if options.get(_GATE_PREHELD):  # its owner holds the gate and releases it
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            if not gate.acquire(timeout=30):
                raise TimeoutError("no write slot on the SQLite database within 30 s")
            conn.info[_GATE_HELD] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn)
                raise

        def _release(conn: Any) -> None:
            if conn.info.pop(_GATE_HELD, False):
                gate.release()

        event.listen(engine, "commit", _release)
        event.listen(engine, "rollback", _release)

        @event.listens_for(engine, "checkin")
        def _release_on_return(_dbapi_conn: Any, record: Any) -> None:
            # Safety net: a transaction whose BEGIN failed after the gate was taken (another begin
            # listener raising) fires neither commit nor rollback; its connection still comes back.
            if record.info.pop(_GATE_HELD, False):
                log.error("a write transaction ended without commit or rollback; its write slot is released")
                gate.release()

        _install_hooks(engine)  # after the gate's own listeners: a commit releases the gate first
        return engine
    engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    _ADMISSION[engine] = threading.BoundedSemaphore(WRITE_CONCURRENCY)
    _install_hooks(engine)
    return engine


def ident(row: Any) -> int:
    """A row's primary key, which exists once the row is flushed (SQLModel types it optional)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id yet: flush it first")
    return int(row.id)


def write_admission(engine: Engine) -> threading.Semaphore | WriterGate | None:
    """What a request's unit of work must hold from before its route runs until it has committed.

    SQLite: the process's writer gate (one writer at a time). PostgreSQL: a semaphore of
    `WRITE_CONCURRENCY`, so that writers blocked on each other's row locks can never occupy every
    thread of the request pool while the one they wait for needs a thread to finish."""
    return _ADMISSION.get(engine)


def open_session(engine: Engine, *, write: bool = False, gate_held: bool = False) -> Session:
    """A session; a write session's transaction begins IMMEDIATE (SQLite) at its first statement,
    in the thread that runs it, not here: opening one takes no lock. ``gate_held``: the caller has
    taken the SQLite writer gate itself (`write_admission`) and releases it after the session ends."""
    return Session(_writer(engine, gate_held) if write else engine, expire_on_commit=False)


# The engine of write sessions, with their options, made once per engine: made per session it
# joined the engine's event listeners anew each time (about 30 us on SQLite, 130 us on PostgreSQL).
# Kept on the engine itself (a cycle the collector frees with it; a weak-keyed map would keep the
# engine alive through its value's reference to it). Two threads racing here make one each; the
# first kept wins and the other is dropped, which is harmless.
_WRITERS = "_bookgate_writers"


def _writer(engine: Engine, gate_held: bool) -> Engine:
    made: dict[bool, Engine] = engine.__dict__.setdefault(_WRITERS, {})
    found = made.get(gate_held)
    if found is None:
        found = made.setdefault(gate_held, engine.execution_options(**{_WRITE_OPTION: True, _GATE_PREHELD: gate_held}))
    return found


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with open_session(engine) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One unit of work (requests and jobs alike): committed when the block ends, rolled back if
    it raises, except for a refusal that asks to keep what it wrote (``AppError(keep=True)``).
    Services flush; only this commits."""
    with open_session(engine, write=True) as session:
        try:
            yield session
        except BaseException as exc:
            if getattr(exc, "keep", False) is True:
                session.commit()
            else:
                session.rollback()
            raise
        session.commit()
