"""Append-only audit trail: rows appended unchained, then linked by one sealer into a keyed hash
chain (HMAC-SHA256) in the order they committed.

A row is written in the transaction of the change it records, with a keyed MAC of its content
(`mac`) and no link yet: writers take no lock and read nothing, so the trail never serialises
write transactions. The sealer (`seal`, run by the `CheckpointKeeper` right after commits and by
`verify`) takes the rows not yet linked in id order, checks each one's MAC, and fills the chain
columns once: its position `seq`, `prev_hash` (the hash of the row before it in the chain) and
`hash`. On PostgreSQL only the sealer takes a lock (a transaction-level advisory try-lock: one
sealer at a time over every node); on SQLite its write transaction is the lock. A row committed
while a sealer runs is linked by the next run, so the chain follows commit order, not id order.

The database refuses DELETE, and any UPDATE but that one filling of the chain columns of an
unlinked row (triggers created by migrations 0001/0009 and narrowed by 0014); the chain catches
what someone with the power to drop those triggers changes anyway, and the MAC what they change
in a row not linked yet.

The chain key is derived from the app's secret key (`Settings.effective_secret_key()`, HMAC
with the label below) and never stored in the database, so whoever can write the table cannot
recompute the hashes after editing a row. Cutting the tail off leaves a shorter chain that
still links; that is what the signed checkpoint catches: a small file outside the database
(`var/audit-checkpoint`: row count, last id, last hash, HMAC signature with a second derived
key). Two things move it forward, both only over rows they have checked to chain onto it:

- the `CheckpointKeeper` of a running server, shortly after every commit that appended rows
  (`record` notes the row on the transaction's connection; the keeper listens to its own
  engine's commits, and a thread of its own seals and walks the new rows at most once per
  `min_interval`, so no writer waits for it), and every `idle_poll` seconds for rows other
  processes appended;
- `bookgate audit verify`, which seals what is unlinked and walks the whole chain.

Rows cut before the keeper has sealed them (within about `min_interval` of their commit, or
while no server runs) are not noticed; everything sealed once is: `verify` names a chain
shorter than the checkpoint `truncated`, and a changed row `rewritten`.

Rows written before migration 0009 were chained with a bare SHA-256; the migration verifies
them by that rule and re-keys the whole chain (it refuses to re-key a chain that is already
broken, so a forgery cannot be laundered). Changing the secret key breaks the chain: keep it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Text, bindparam, insert, text, update
from sqlmodel import Field, Session, SQLModel, col, select

from config import get_settings
from core import db
from core.db import UTCDateTime, is_sqlite, read_session, utcnow, write_session

log = logging.getLogger("bookgate.audit")

GENESIS = "0" * 64
UNLINKED = ""  # prev_hash and hash of a row the sealer has not linked yet
# Any constant will do: it names the one advisory lock the sealer takes on PostgreSQL.
_PG_LOCK_KEY = 0x626F6F6B67617465 & 0x7FFFFFFFFFFFFFFF


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor_id: int | None = Field(default=None, index=True)
    actor: str = Field(max_length=254, description="email, api key or 'system'")
    action: str = Field(max_length=80, index=True)
    object_type: str = Field(max_length=40)
    object_id: str = Field(max_length=80)
    client_addr: str | None = Field(default=None, max_length=64)
    summary: str = Field(default="{}", sa_type=Text, description="canonical JSON: before/after and details")
    mac: str | None = Field(default=None, max_length=64, description="keyed MAC of the content, set on append")
    seq: int | None = Field(default=None, unique=True, index=True, description="chain position, set by the sealer")
    prev_hash: str = Field(default=UNLINKED, max_length=64)
    hash: str = Field(default=UNLINKED, max_length=64)


@dataclass(frozen=True)
class Actor:
    """Who did it, from where: carried from the request into service calls."""

    id: int | None
    label: str
    client_addr: str | None = None


SYSTEM = Actor(id=None, label="system")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


_CHAIN_LABEL = b"bookgate audit chain v1"
# connection.info key: the highest audit row id this transaction appended (see CheckpointKeeper)
APPENDED = "bookgate.audit_appended"
_CHECKPOINT_LABEL = b"bookgate audit checkpoint v1"
CHECKPOINT_FILE = "audit-checkpoint"


@lru_cache(maxsize=8)
def _derive(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def chain_key(secret: str | None = None) -> bytes:
    """The key rows are chained with: from `secret`, else from the settings' secret key."""
    return _derive(get_settings().effective_secret_key() if secret is None else secret, _CHAIN_LABEL)


def checkpoint_key(secret: str | None = None) -> bytes:
    return _derive(get_settings().effective_secret_key() if secret is None else secret, _CHECKPOINT_LABEL)


def _material(prev_hash: str, e: AuditEntry) -> bytes:
    material = "\x1f".join(
        [
            prev_hash,
            e.at.isoformat(),
            "" if e.actor_id is None else str(e.actor_id),
            e.actor,
            e.action,
            e.object_type,
            e.object_id,
            e.client_addr or "",
            e.summary,
        ]
    )
    return material.encode()


def legacy_digest(prev_hash: str, e: AuditEntry) -> str:
    """The rule of rows written before migration 0009 (bare SHA-256): for that migration only."""
    return hashlib.sha256(_material(prev_hash, e)).hexdigest()


def keyed_digest(prev_hash: str, e: AuditEntry, key: bytes) -> str:
    """The rule of every row since migration 0009: HMAC-SHA256 under the chain key."""
    return hmac.new(key, _material(prev_hash, e), hashlib.sha256).hexdigest()


_digest = keyed_digest


def row_mac(e: Any, key: bytes) -> str:
    """The MAC a row carries from its append: its content under the chain key, no link."""
    return hmac.new(key, b"row\x1f" + _material("", e), hashlib.sha256).hexdigest()


def entry(
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    *,
    before: Any = None,
    after: Any = None,
    mac_key: bytes | None = None,
    **details: Any,
) -> AuditEntry:
    """A new, unlinked row with its MAC (not written)."""
    summary: dict[str, Any] = dict(details)
    if before is not None:
        summary["before"] = before
    if after is not None:
        summary["after"] = after
    e = AuditEntry(
        at=utcnow(),
        actor_id=actor.id,
        actor=actor.label,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        client_addr=actor.client_addr,
        summary=_canonical(summary),
    )
    e.mac = row_mac(e, mac_key or chain_key())
    return e


_TABLE = AuditEntry.__table__  # type: ignore[attr-defined]
_APPEND = insert(_TABLE).returning(_TABLE.c.id)


def append(session: Session, e: AuditEntry) -> AuditEntry:
    """Write an unlinked row (one INSERT, no lock, nothing read) and note it for the keeper."""
    values = {
        "at": e.at,
        "actor_id": e.actor_id,
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "client_addr": e.client_addr,
        "summary": e.summary,
        "mac": e.mac,
        "prev_hash": UNLINKED,
        "hash": UNLINKED,
    }
    e.id = session.execute(_APPEND, values).scalar_one()
    info = session.connection().info
    info[APPENDED] = max(info.get(APPENDED, 0), e.id or 0)
    return e


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    *,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> AuditEntry:
    """Append one row to the caller's transaction. It takes no lock: the sealer links it after
    the commit."""
    return append(session, entry(actor, action, object_type, object_id, before=before, after=after, **details))


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain as last seen intact: how many rows, and the last one's id and hash."""

    rows: int
    last_id: int
    last_hash: str

    def _payload(self) -> bytes:
        return f"{self.rows}\x1f{self.last_id}\x1f{self.last_hash}".encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self._payload(), hashlib.sha256).hexdigest()


class CheckpointError(Exception):
    """The checkpoint file is unreadable or its signature does not match: it was tampered with."""


def read_checkpoint(path: Path, key: bytes | None = None) -> Checkpoint | None:
    """The signed checkpoint at `path`, None if there is none yet."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        cp = Checkpoint(int(data["rows"]), int(data["last_id"]), str(data["last_hash"]))
        sig = str(data["sig"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"audit checkpoint {path} is unreadable") from exc
    if not hmac.compare_digest(sig, cp.signature(key or checkpoint_key())):
        raise CheckpointError(f"audit checkpoint {path} does not match its signature")
    return cp


def write_checkpoint(path: Path, cp: Checkpoint, key: bytes | None = None) -> None:
    """Replace the checkpoint atomically (write aside, fsync, rename), readable by its owner only."""
    sig = cp.signature(key or checkpoint_key())
    body = json.dumps({"rows": cp.rows, "last_id": cp.last_id, "last_hash": cp.last_hash, "sig": sig})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


Problem = Literal["", "rewritten", "truncated"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""
    problem: Problem = ""
    head: Checkpoint | None = None  # the intact chain's head: what the next checkpoint records
    unlinked: int = 0  # rows committed after the last seal: their MACs checked, not chained yet


class ChainError(Exception):
    """The rows after the checkpoint do not chain onto it: the trail was rewritten or cut."""

    def __init__(self, problem: Problem, reason: str, row_id: int | None = None) -> None:
        super().__init__(reason)
        self.problem: Problem = problem
        self.row_id = row_id


def _mac_ok(row: Any, key: bytes) -> bool:
    return row.mac is not None and hmac.compare_digest(row_mac(row, key), row.mac)


def seal(engine: Engine, *, key: bytes | None = None, batch: int = 2000) -> int:
    """Link the rows not linked yet onto the head of the chain, in id order of what has committed,
    in one write transaction; returns how many. One sealer at a time: on PostgreSQL a sealer that
    finds another at work returns 0 (that one links them). Raises `ChainError` at the first row
    whose MAC does not match its content (the rows before it are linked, it and those after are not)."""
    key = key or chain_key()
    linked = 0
    bad: Any = None
    with write_session(engine) as s:
        if not is_sqlite(s) and not s.execute(_SEALER_LOCK, {"k": _PG_LOCK_KEY}).scalar():
            return 0
        head = s.execute(_SEALED_HEAD).first()
        seq, prev = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
        after_id = 0
        while bad is None:
            rows = s.execute(_unsealed(batch), {"after_id": after_id}).all()
            if not rows:
                break
            links = []
            for row in rows:
                if not _mac_ok(row, key):
                    bad = row
                    break
                seq += 1
                digest = _digest(prev, row, key)  # type: ignore[arg-type]
                links.append({"row_id": row.id, "new_seq": seq, "new_prev": prev, "new_hash": digest})
                prev = digest
            if links:
                s.execute(_LINK, links)
                linked += len(links)
            after_id = rows[-1].id
    if bad is not None:
        raise ChainError("rewritten", "row content does not match its hash", bad.id)
    return linked


# The sealer's statements, built once: it runs after every burst of commits.
_SEALER_LOCK = text("SELECT pg_try_advisory_xact_lock(:k)")
_SEALED_HEAD = (
    select(_TABLE.c.seq, _TABLE.c.hash).where(_TABLE.c.seq.is_not(None)).order_by(_TABLE.c.seq.desc()).limit(1)
)
_LINK = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("row_id"), _TABLE.c.seq.is_(None))
    .values(seq=bindparam("new_seq"), prev_hash=bindparam("new_prev"), hash=bindparam("new_hash"))
)


@lru_cache(maxsize=8)
def _unsealed(batch: int) -> Any:
    return (
        select(_TABLE)
        .where(_TABLE.c.seq.is_(None), _TABLE.c.id > bindparam("after_id"))
        .order_by(_TABLE.c.id)
        .limit(batch)
    )


@lru_cache(maxsize=8)
def _sealed_after(batch: int) -> Any:
    return (
        select(AuditEntry).where(col(AuditEntry.seq) > bindparam("last_seq")).order_by(col(AuditEntry.seq)).limit(batch)
    )


_SEQ_OF = select(AuditEntry.seq).where(col(AuditEntry.id) == bindparam("row_id"))


def _seal_quietly(session: Session, key: bytes) -> None:
    """What `verify` seals before its walk; a row it cannot link is named by the walk itself."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    try:
        seal(engine, key=key)
    except ChainError:
        pass
    except Exception as exc:  # a read-only database, say: the walk accounts for the unlinked rows
        log.warning("audit: could not seal before verifying (%s); unlinked rows are checked by their MAC", exc)


def verify(
    session: Session, batch: int = 5000, *, key: bytes | None = None, checkpoint: Checkpoint | None = None
) -> VerifyResult:
    """Seal what is not linked yet, then walk the chain in its order; name the first row whose link
    or content does not match (`rewritten`), or, given the last checkpoint, a chain shorter than it
    (`truncated`). Rows committed after the seal are checked by their MAC and counted `unlinked`."""
    key = key or chain_key()
    _seal_quietly(session, key)
    return _walk(session, batch, key, checkpoint)


def _walk(session: Session, batch: int, key: bytes, checkpoint: Checkpoint | None) -> VerifyResult:
    prev = GENESIS
    checked = 0
    last_id = 0
    last_seq = 0
    seen_checkpoint_row = False
    while True:
        rows = session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.seq) > last_seq)
            .order_by(col(AuditEntry.seq))
            .limit(batch)
            # rows the caller's session loaded before the seal would keep their unlinked values
            .execution_options(populate_existing=True)
        ).all()
        if not rows:
            break
        for row in rows:
            if row.prev_hash != prev:
                return VerifyResult(False, checked, row.id, "link to the previous row is broken", "rewritten")
            if not hmac.compare_digest(_digest(prev, row, key), row.hash):
                return VerifyResult(False, checked, row.id, "row content does not match its hash", "rewritten")
            if checkpoint is not None and row.id == checkpoint.last_id:
                if row.hash != checkpoint.last_hash:
                    return VerifyResult(
                        False, checked, row.id, "row differs from the one the checkpoint recorded", "rewritten"
                    )
                seen_checkpoint_row = True
            prev = row.hash
            checked += 1
            last_id = row.id or last_id
            last_seq = row.seq or last_seq
    unlinked = 0
    after_id = 0
    while True:
        rest = session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.seq).is_(None), col(AuditEntry.id) > after_id)
            .order_by(col(AuditEntry.id))
            .limit(batch)
        ).all()
        if not rest:
            break
        for row in rest:
            if not _mac_ok(row, key):
                return VerifyResult(False, checked, row.id, "row content does not match its hash", "rewritten")
            unlinked += 1
        after_id = rest[-1].id or after_id
    if checkpoint is not None and (checked < checkpoint.rows or not (seen_checkpoint_row or checkpoint.rows == 0)):
        return VerifyResult(
            False,
            checked,
            None,
            f"the checkpoint recorded {checkpoint.rows} rows up to row {checkpoint.last_id}; "
            f"{checked} rows remain and the last is row {last_id or 'none'}",
            "truncated",
        )
    return VerifyResult(ok=True, checked=checked, head=Checkpoint(checked, last_id, prev), unlinked=unlinked)


@contextmanager
def _file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """The advisory lock every process writing the checkpoint at `path` takes (a file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def store_checkpoint(path: Path, head: Checkpoint, key: bytes | None = None) -> Checkpoint:
    """Write `head` unless the file already holds a later one (a running server's keeper may have
    sealed more meanwhile): what `bookgate audit verify` calls after an intact walk. Returns what
    the file holds afterwards."""
    key = key or checkpoint_key()
    with _file_lock(path, wait=True):
        try:
            current = read_checkpoint(path, key)
        except CheckpointError:
            current = None  # the caller has just verified the chain: its head replaces a bad file
        if current is not None and current.rows >= head.rows:
            return current
        write_checkpoint(path, head, key)
        return head


def extend(
    session: Session, checkpoint: Checkpoint | None, *, key: bytes | None = None, batch: int = 5000
) -> Checkpoint:
    """The checkpoint moved over the rows linked after it, each checked to chain onto it.

    Walks only the new links (and checks the checkpoint's own row), so it costs what was
    appended, not the size of the trail; without a checkpoint it walks everything once. Raises
    `ChainError` when the checkpoint's row is gone or changed, or a new row does not chain."""
    key = key or chain_key()
    if checkpoint is None:
        result = _walk(session, batch, key, None)
        if not result.ok or result.head is None:
            raise ChainError(result.problem or "rewritten", result.reason, result.first_bad_id)
        return result.head
    rows, last_id, prev = checkpoint.rows, checkpoint.last_id, checkpoint.last_hash
    last_seq = 0
    if checkpoint.rows:
        sealed = session.get(AuditEntry, checkpoint.last_id)
        if sealed is None:
            raise ChainError("truncated", f"row {checkpoint.last_id}, sealed by the checkpoint, is gone")
        if (
            sealed.seq is None
            or sealed.hash != checkpoint.last_hash
            or not hmac.compare_digest(_digest(sealed.prev_hash, sealed, key), sealed.hash)
        ):
            raise ChainError("rewritten", "row differs from the one the checkpoint recorded", checkpoint.last_id)
        last_seq = sealed.seq
    while True:
        new = session.exec(_sealed_after(batch), params={"last_seq": last_seq}).all()
        if not new:
            return Checkpoint(rows, last_id, prev)
        for row in new:
            if row.prev_hash != prev:
                raise ChainError("rewritten", "link to the previous row is broken", row.id)
            if not hmac.compare_digest(_digest(prev, row, key), row.hash):
                raise ChainError("rewritten", "row content does not match its hash", row.id)
            prev, last_id, rows, last_seq = row.hash, row.id or last_id, rows + 1, row.seq or last_seq


class CheckpointKeeper:
    """Moves the signed checkpoint forward after every commit that appended audit rows.

    `record` leaves the highest id it appended on the transaction's connection; the keeper
    listens to its own engine's commits (no process-wide listener) and only notes that id, so the
    writer pays a dictionary lookup. A thread of its own then links the new rows (`seal`, one short
    write transaction) and walks the new links with `extend` in a read session, at most once per
    `min_interval` seconds however many commits came meanwhile, and writes the file (fsync, rename)
    under an advisory file lock
    shared by every process of this var dir, never moving it backwards. The commit event comes
    just before the database commits, so a run that does not see the noted row yet runs again
    (for `settle` seconds at most: a commit that failed never shows its row). Every `idle_poll`
    seconds it also looks for rows that other processes appended.

    Found a problem (the trail no longer chains onto the checkpoint), it stops advancing, logs an
    error and keeps the reason in `problem`; `bookgate audit verify` says the same."""

    def __init__(
        self,
        engine: Engine,
        path: Path,
        *,
        secret: str | None = None,
        min_interval: float = 0.2,
        idle_poll: float = 5.0,
        settle: float = 5.0,
    ) -> None:
        self.engine = engine
        self.path = path
        self.chain_key = chain_key(secret)
        self.checkpoint_key = checkpoint_key(secret)
        self.min_interval = min_interval
        self.idle_poll = idle_poll
        self.settle = settle
        self.problem: ChainError | CheckpointError | None = None
        self.sealed: Checkpoint | None = None
        self._target = 0
        self._target_since = 0.0
        self._reached = 0  # the highest noted row seen linked
        self._cond = threading.Condition()
        self._step = threading.Lock()  # one step at a time in this process (the file lock is per process)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the writer's side: called in the committing thread, must stay trivial
    def _on_commit(self, conn: Connection) -> None:
        # read, not popped: several keepers may watch one engine; the next begin clears it
        appended = conn.info.get(APPENDED)
        if appended:
            with self._cond:
                if appended > self._target:
                    self._target = appended
                    self._target_since = time.monotonic()
                self._cond.notify()

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(APPENDED, None)

    @staticmethod
    def _on_begin(conn: Connection) -> None:
        conn.info.pop(APPENDED, None)  # what an earlier, committed transaction noted

    def start(self) -> None:
        db.listen(self.engine, "begin", self._on_begin)
        db.listen(self.engine, "commit", self._on_commit)
        db.listen(self.engine, "rollback", self._on_rollback)
        self._thread = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        for name, fn in (("begin", self._on_begin), ("commit", self._on_commit), ("rollback", self._on_rollback)):
            db.unlisten(self.engine, name, fn)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._safe_advance()  # seal what the last commits appended (never fails the shutdown)

    # -- the keeper's side
    def advance(self) -> Checkpoint | None:
        """One step: read the file, seal the rows appended after it, write it. The new head, or
        None when the trail does not chain onto the checkpoint (see `problem`) or another
        process holds the file lock (it is doing the same work)."""
        with self._step, _file_lock(self.path, wait=False) as locked:
            if not locked:
                return None
            with self._cond:
                target = self._target
            unlinkable: ChainError | None = None
            try:
                seal(self.engine, key=self.chain_key)
            except ChainError as exc:  # the rows before it are linked: seal those in the file too
                unlinkable = exc
            try:
                current = read_checkpoint(self.path, self.checkpoint_key)
                with read_session(self.engine) as session:
                    head = extend(session, current, key=self.chain_key)
                    if target > self._reached and session.exec(_SEQ_OF, params={"row_id": target}).first() is not None:
                        self._reached = target
                if current is None or head.rows > current.rows:
                    write_checkpoint(self.path, head, self.checkpoint_key)
                self.sealed = head
                if unlinkable is not None:
                    raise unlinkable
            except (ChainError, CheckpointError) as exc:
                if self.problem is None or str(self.problem) != str(exc):
                    log.error("audit trail: %s; the checkpoint is not moved (run `bookgate audit verify`)", exc)
                self.problem = exc
                return None
            self.problem = None
            return head

    def _run(self) -> None:
        last = 0.0
        self._safe_advance()
        while True:
            with self._cond:
                pending = self._target > self._reached and time.monotonic() - self._target_since < self.settle
                if not pending and not self._stopping:
                    self._cond.wait(timeout=self.idle_poll)
                if self._stopping:
                    return
            wait = last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            self._safe_advance()

    def _safe_advance(self) -> None:
        try:
            self.advance()
        except Exception:  # a database or file error: the next run retries
            log.exception("sealing the audit checkpoint failed; the next run retries")
