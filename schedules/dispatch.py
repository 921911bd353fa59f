"""The dispatcher: claims due transitions and brings each (door, credential) to its desired state.

Several gateway nodes may run it at once: rows are claimed with a lease under
`FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises writers), so none is lost or doubled.
What to send is decided at send time from the desired state, not read from the row: a grant
that comes late after its window sends a revoke, and a revoke while another booking still
covers the credential re-sends the grant with the merged window.

A claimed batch is read in one session, rows for the same (door, credential) collapse into one
command, and with a `send_many` the commands go out concurrently (the driver keeps one in flight
per controller), so a burst for a thousand controllers is not a thousand round trips in a row.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select, update

from access.desired import Cred, DoorGrant, Window, desired_state
from access.models import AccessWindow, Controller, Credential, Door, DoorResource, Transition, unseal
from access.protocol import Command, CommandResult, Grant, HoldOpen, Revoke
from access.service import state_for_doors
from core import audit, outbox
from core.audit import SYSTEM
from core.db import among, read_session, utcnow, write_session
from core.models import User

log = logging.getLogger("bookgate.dispatch")

MAX_ATTEMPTS = 6
LEASE = timedelta(seconds=60)

Send = Callable[[str, Command], CommandResult]
SendMany = Callable[[Sequence[tuple[str, Command]]], list[CommandResult]]


@dataclass(frozen=True)
class Due:
    id: int
    controller_key: str
    door_id: int
    credential_id: int | None
    action: str
    attempts: int


def _claimable(now: datetime):
    return (
        col(Transition.status) == "pending",
        col(Transition.due_at) <= now,
        or_(col(Transition.claimed_until).is_(None), col(Transition.claimed_until) < now),
    )


def claim_due(engine: Engine, worker: str, now: datetime, *, limit: int = 500, lease: timedelta = LEASE) -> list[Due]:
    with write_session(engine) as s:
        rows: Sequence[Any] = (
            s.connection()
            .execute(
                sa_select(
                    *(
                        col(c)
                        for c in (
                            Transition.id,
                            Controller.key,
                            Transition.door_id,
                            Transition.credential_id,
                            Transition.action,
                            Transition.attempts,
                        )
                    )
                )
                .join(Controller, col(Controller.id) == col(Transition.controller_id))
                .where(*_claimable(now))
                .order_by(col(Transition.due_at), col(Transition.id))
                .limit(limit)
                .with_for_update(skip_locked=True, of=Transition)  # the rows claimed, not their controllers
            )
            .all()
        )
        if not rows:
            return []
        # A row whose door and card have a command in flight (claimed by a batch still waiting for its
        # acknowledgement, here or on another node) waits: sent now, it could overtake that command.
        busy = set(
            s.exec(
                select(Transition.door_id, Transition.credential_id).where(
                    col(Transition.status) == "pending",
                    col(Transition.due_at) <= now,
                    col(Transition.claimed_until).is_not(None),
                    col(Transition.claimed_until) >= now,
                )
            ).all()
        )
        rows = [t for t in rows if (t.door_id, t.credential_id) not in busy]
        if not rows:
            return []
        claimed = [Due(t.id, t.key, t.door_id, t.credential_id, t.action, t.attempts + 1) for t in rows]
        s.exec(
            update(Transition)
            .where(among(s, col(Transition.id), [d.id for d in claimed]))
            .values(claimed_by=worker, claimed_until=now + lease, attempts=Transition.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return claimed


def next_due(engine: Engine) -> datetime | None:
    """When the earliest pending transition falls due (the clock's next exact wake-up)."""
    with read_session(engine) as s:
        return s.exec(select(func.min(Transition.due_at)).where(col(Transition.status) == "pending")).one()


@dataclass(frozen=True, slots=True)
class _Cred:
    """The credential columns a command needs (read as columns: a batch reads hundreds)."""

    user_id: int
    kind: str
    format: str
    value: str
    secret: str | None
    revoked_at: datetime | None
    valid_from: datetime | None
    valid_until: datetime | None

    @property
    def plain(self) -> str:
        return unseal(self.secret) if self.secret is not None else self.value  # as `plain_value`


def _command(
    due: Due, cred: _Cred | None, output: int | None, label: str, grants: list[DoorGrant], tag: str
) -> Command | None:
    if cred is None or output is None or cred.kind != "badge":
        return None
    command_id = f"t{due.id}-{due.attempts}-{tag}"
    if cred.revoked_at is None and grants:
        g = grants[0]  # the earliest window still to come or under way
        value = cred.plain  # decrypted only here, to be sent
        return Grant(command_id, output, value, label, g.valid_from, g.valid_until, credential_format=cred.format)
    return Revoke(command_id, output, cred.plain, cred.format)


def _grants(session: Session, door_ids: list[int], since: datetime, creds: dict[int, _Cred]) -> Sequence[DoorGrant]:
    """`access.service.state_for_doors(...).grants` for these credentials only (they are independent
    of one another), read as columns: the same windows, links and rules (`desired_state`)."""
    conn = session.connection()
    doors_of: dict[int, list[int]] = defaultdict(list)
    for door_id, resource_id in conn.execute(
        sa_select(col(DoorResource.door_id), col(DoorResource.resource_id)).where(
            among(session, col(DoorResource.door_id), door_ids)
        )
    ).all():
        doors_of[resource_id].append(door_id)
    users = {c.user_id for c in creds.values()}
    rows: Sequence[Any] = conn.execute(
        sa_select(
            *(
                col(c)
                for c in (
                    AccessWindow.user_id,
                    AccessWindow.resource_id,
                    AccessWindow.start,
                    AccessWindow.end,
                    AccessWindow.mode,
                    AccessWindow.source_type,
                    AccessWindow.source_id,
                    AccessWindow.door_id,
                )
            )
        ).where(
            or_(
                among(session, col(AccessWindow.resource_id), doors_of),
                among(session, col(AccessWindow.door_id), door_ids),
            ),
            col(AccessWindow.end) > since,
            among(session, col(AccessWindow.user_id), users),
        )
    ).all()
    wanted = set(door_ids)
    windows = [Window(u, r, a, z, m, f"{st}:{si}", d if d in wanted else None) for u, r, a, z, m, st, si, d in rows]
    live = [
        Cred(cid, c.user_id, c.kind, c.value, c.valid_from, c.valid_until)
        for cid, c in creds.items()
        if c.revoked_at is None
    ]
    return desired_state(windows, doors_of, live).grants


def commands_for(session: Session, batch: Sequence[Due], now: datetime) -> dict[int, Command | None]:
    """The command that makes each row's controller match the desired state now, by row id; None if
    there is nothing to send (a credential kind this controller does not store, or an open/close
    it cannot express: esp-rfid cannot be told to hold a door open)."""
    cred_ids = {d.credential_id for d in batch if d.credential_id is not None}
    creds: dict[int, _Cred] = {}
    if cred_ids:
        rows: Sequence[Any] = (
            session.connection()
            .execute(
                sa_select(
                    *(
                        col(c)
                        for c in (
                            Credential.id,
                            Credential.user_id,
                            Credential.kind,
                            Credential.format,
                            Credential.value,
                            Credential.secret,
                            Credential.revoked_at,
                            Credential.valid_from,
                            Credential.valid_until,
                        )
                    )
                ).where(among(session, col(Credential.id), cred_ids))
            )
            .all()
        )
        creds = {r[0]: _Cred(*r[1:]) for r in rows}
    door_ids = {d.door_id for d in batch}
    outputs: dict[int, int] = dict(
        session.exec(select(Door.id, Door.output).where(among(session, col(Door.id), door_ids))).all()  # type: ignore[arg-type]
    )
    users = {c.user_id for c in creds.values()}
    names: dict[int, str] = (
        dict(session.exec(select(User.id, User.name).where(among(session, col(User.id), users))).all())  # type: ignore[arg-type]
        if users
        else {}
    )
    current: dict[tuple[int, int], list[DoorGrant]] = defaultdict(list)
    if creds:
        for g in _grants(session, sorted(outputs), now, creds):
            if g.preload:
                current[(g.door_id, g.credential_id)].append(g)
    # `free` windows: an open/close row holds the door's output released until the window's end,
    # or locks it again (controllers that cannot hold an output answer that there is nothing to do)
    open_doors = sorted({d.door_id for d in batch if d.credential_id is None} & set(outputs))
    held: dict[int, datetime] = {}
    if open_doors:
        for h in state_for_doors(session, open_doors, now).hold_open:
            if h.start <= now < h.end:
                held[h.door_id] = max(h.end, held.get(h.door_id, h.end))
    out: dict[int, Command | None] = {}
    # A command id: the row, its attempt and a random tag drawn once per batch (the row ids keep
    # the batch's ids apart; the tag keeps them apart from any earlier claim's).
    tag = secrets.token_hex(3)
    for due in batch:
        output = outputs.get(due.door_id)
        if due.credential_id is None:
            out[due.id] = (
                HoldOpen(f"t{due.id}-{due.attempts}-{tag}", output, held.get(due.door_id))
                if output is not None
                else None
            )
            continue
        cred = creds.get(due.credential_id)
        label = names.get(cred.user_id, str(cred.user_id)) if cred else ""
        out[due.id] = _command(due, cred, output, label, current.get((due.door_id, due.credential_id), []), tag)
    return out


def _finish(engine: Engine, worker: str, outcomes: list[tuple[Due, bool, str]], now: datetime) -> None:
    done = [due.id for due, ok, _ in outcomes if ok]
    with write_session(engine) as s:
        if done:
            s.exec(
                update(Transition)
                .where(among(s, col(Transition.id), done), col(Transition.claimed_by) == worker)
                .values(status="done", done_at=now, claimed_until=None)
            )
        for due, ok, detail in outcomes:
            if ok:
                continue
            values: dict = {"claimed_until": None, "last_error": detail[:500]}
            if due.attempts >= MAX_ATTEMPTS:
                values["status"] = "failed"
            else:
                values["due_at"] = now + timedelta(seconds=min(300, 2**due.attempts))
            s.exec(
                update(Transition)
                .where(col(Transition.id) == due.id, col(Transition.claimed_by) == worker)
                .values(**values)
            )
            if values.get("status") == "failed":
                # The alert: the controller is degraded (shown by /api/v1/controllers) and it is audited.
                s.exec(update(Controller).where(col(Controller.key) == due.controller_key).values(state="degraded"))
                audit.record(
                    s,
                    SYSTEM,
                    "controller.degraded",
                    "controller",
                    due.controller_key,
                    transition_id=due.id,
                    attempts=due.attempts,
                    error=detail[:200],
                )
                # and the people who look after it are told (notify delivers it after the commit)
                outbox.enqueue(s, "controller.degraded", {"controller": due.controller_key, "error": detail[:200]})


def _send_each(send: Send, pairs: Sequence[tuple[str, Command]]) -> list[CommandResult]:
    out = []
    for key, command in pairs:
        try:
            out.append(send(key, command))
        except Exception as exc:  # ControllerUnavailable and friends: retry later, never open anything
            out.append(CommandResult(command.command_id, False, f"{type(exc).__name__}: {exc}"))
    return out


class _Leases:
    """Keeps the claims of the batches in flight: every third of the lease their rows' lease is
    moved on, so a batch whose acknowledgements take longer than the lease (a long queue to one
    slow controller, a command on its retry schedule, the next batch claimed while this one is on
    the wire) is not claimed a second time, here or by another node. A node that dies stops
    renewing, and its rows come back when their lease runs out."""

    def __init__(self, engine: Engine, worker: str, lease: timedelta) -> None:
        self.engine, self.worker, self.lease = engine, worker, lease
        self._held: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, key: int, ids: list[int]) -> None:
        with self._lock:
            self._held[key] = ids
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dispatch-leases", daemon=True)
                self._thread.start()

    def drop(self, key: int) -> None:
        with self._lock:
            self._held.pop(key, None)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            with self._lock:
                ids = [i for held in self._held.values() for i in held]
            if not ids:
                continue
            try:
                renew_leases(self.engine, self.worker, ids, utcnow() + self.lease)
            except Exception:  # the next round tries again; at worst the lease runs out
                log.exception("renewing the leases of %d transitions in flight failed", len(ids))


def renew_leases(engine: Engine, worker: str, ids: Sequence[int], until: datetime) -> int:
    """Move on the lease of these rows, where this worker still holds them; returns how many.
    One statement: at most `pipeline` batches are held (at most 8 of 500 ids), one array on PostgreSQL."""
    with write_session(engine) as s:
        result = s.exec(
            update(Transition)
            .where(
                among(s, col(Transition.id), ids),
                col(Transition.claimed_by) == worker,
                col(Transition.status) == "pending",
            )
            .values(claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)


@dataclass
class _Planned:
    """A claimed batch with its commands: one per (controller, door, credential)."""

    at: datetime
    groups: list[tuple[list[Due], Command | None]]
    pairs: list[tuple[str, Command]]


def _plan(engine: Engine, batch: list[Due], at: datetime) -> _Planned:
    with read_session(engine) as s:
        commands = commands_for(s, batch, at)
    # One command per (controller, door, credential): the state decides, so duplicates agree.
    groups: dict[tuple, list[Due]] = defaultdict(list)
    for due in batch:
        key = (due.controller_key, due.door_id, due.credential_id) if commands[due.id] else ("none", due.id)
        groups[key].append(due)
    planned = [(dues, commands[dues[0].id]) for dues in groups.values()]
    pairs = [(dues[0].controller_key, command) for dues, command in planned if command is not None]
    return _Planned(at, planned, pairs)


def _send(send: Send | None, send_many: SendMany | None, pairs: list[tuple[str, Command]]) -> list[CommandResult]:
    if not pairs:
        return []
    if send_many is not None:
        return send_many(pairs)
    assert send is not None  # checked on entry: one of the two is given
    return _send_each(send, pairs)


def _outcomes(planned: _Planned, results: list[CommandResult]) -> list[tuple[Due, bool, str]]:
    by_command = {command.command_id: result for (_, command), result in zip(planned.pairs, results, strict=True)}
    outcomes = []
    for dues, command in planned.groups:
        result = by_command[command.command_id] if command else CommandResult("", True, "nothing to send")
        if not result.ok:
            log.warning(
                "transition %s to %s failed (attempt %s): %s",
                dues[0].id,
                dues[0].controller_key,
                dues[0].attempts,
                result.detail,
            )
        outcomes += [(due, result.ok, result.detail) for due in dues]
    return outcomes


def dispatch_once(
    engine: Engine,
    send: Send | None = None,
    *,
    send_many: SendMany | None = None,
    worker: str | None = None,
    now: datetime | None = None,
    limit: int = 500,
    lease: timedelta = LEASE,
    stopping: Callable[[], bool] = lambda: False,
    pipeline: int = 1,
) -> int:
    """Handle every transition due now; returns how many were settled (sent or nothing to send).

    With `pipeline` > 1, while up to that many batches wait for their acknowledgements (on threads
    of a small pool), the next one is claimed and its commands computed; batches that have come
    back are settled together in one transaction. A row whose door and card are in flight is left
    by the claim until its batch is settled, so nothing overtakes a command on the wire. A batch
    smaller than `limit` with nothing in flight (the usual, quiet case) is sent on this thread.
    The server passes `Settings.dispatch_pipeline` (2): on a quiet 2-core machine two batches in
    flight brought 5,000 grants from 31-35 % to 46-51 % of the raw client's rate (bench/README.md,
    access burst). The claims of every batch in flight are renewed while it waits (`_Leases`)."""
    if send is None and send_many is None:
        raise ValueError("dispatch_once needs send or send_many")
    worker = worker or "d-" + secrets.token_hex(4)
    settled = 0
    inflight: deque[tuple[Future[list[CommandResult]], _Planned]] = deque()
    pool: ThreadPoolExecutor | None = None
    leases = _Leases(engine, worker, lease)

    def settle(done: list[tuple[Future[list[CommandResult]], _Planned]]) -> int:
        outcomes: list[tuple[Due, bool, str]] = []
        for future, planned in done:
            outcomes += _outcomes(planned, future.result())
        _finish(engine, worker, outcomes, now or utcnow())
        for _, planned in done:
            leases.drop(id(planned))
        return sum(1 for _, ok, _ in outcomes if ok)

    try:
        while True:
            planned = None
            if not stopping():  # checked between batches: a shutdown waits for the batches in flight
                at = now or utcnow()
                batch = claim_due(engine, worker, at, limit=limit, lease=lease)
                if batch:
                    planned = _plan(engine, batch, at)
                    leases.hold(id(planned), [d.id for d in batch])
            if planned is not None:
                future: Future[list[CommandResult]] = Future()
                if (len(batch) < limit and not inflight) or pipeline <= 1:
                    future.set_result(_send(send, send_many, planned.pairs))
                else:
                    pool = pool or ThreadPoolExecutor(max_workers=pipeline, thread_name_prefix="dispatch-send")
                    future = pool.submit(_send, send, send_many, planned.pairs)
                inflight.append((future, planned))
            if planned is None or len(inflight) >= pipeline or inflight[0][0].done():
                if not inflight:
                    return settled
                done = [inflight.popleft()]
                done[0][0].result()  # wait for the oldest
                while inflight and inflight[0][0].done():
                    done.append(inflight.popleft())
                settled += settle(done)
    finally:
        if inflight:  # an error: what did come back is still settled (the rest waits for its lease)
            try:
                settle([(f, p) for f, p in inflight if f.exception() is None])
            except Exception:
                log.exception("settling the batches in flight failed")
        if pool is not None:
            pool.shutdown(wait=True)
        leases.close()
