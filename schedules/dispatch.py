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
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_
from sqlmodel import Session, col, select, update

from access.desired import DoorGrant
from access.models import Controller, Credential, Door, Transition, plain_value
from access.protocol import Command, CommandResult, Grant, HoldOpen, Revoke
from access.service import state_for_doors
from core import audit, outbox
from core.audit import SYSTEM
from core.db import ident, read_session, utcnow, write_session
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
        rows = s.exec(
            select(Transition)
            .where(*_claimable(now))
            .order_by(col(Transition.due_at), col(Transition.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
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
        wanted = {t.controller_id for t in rows}
        keys = dict(s.exec(select(Controller.id, Controller.key).where(col(Controller.id).in_(wanted))).all())
        claimed = [
            Due(ident(t), keys[t.controller_id], t.door_id, t.credential_id, t.action, t.attempts + 1) for t in rows
        ]
        s.exec(
            update(Transition)
            .where(col(Transition.id).in_([d.id for d in claimed]))
            .values(claimed_by=worker, claimed_until=now + lease, attempts=Transition.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return claimed


def next_due(engine: Engine) -> datetime | None:
    """When the earliest pending transition falls due (the clock's next exact wake-up)."""
    with read_session(engine) as s:
        return s.exec(select(func.min(Transition.due_at)).where(col(Transition.status) == "pending")).one()


def _command(
    due: Due, cred: Credential | None, door: Door | None, label: str, grants: list[DoorGrant]
) -> Command | None:
    if cred is None or door is None or cred.kind != "badge":
        return None
    command_id = f"t{due.id}-{due.attempts}-{secrets.token_hex(3)}"
    if cred.revoked_at is None and grants:
        g = grants[0]  # the earliest window still to come or under way
        value = plain_value(cred)  # decrypted only here, to be sent
        return Grant(command_id, door.output, value, label, g.valid_from, g.valid_until, credential_format=cred.format)
    return Revoke(command_id, door.output, plain_value(cred), cred.format)


def commands_for(session: Session, batch: Sequence[Due], now: datetime) -> dict[int, Command | None]:
    """The command that makes each row's controller match the desired state now, by row id; None if
    there is nothing to send (a credential kind this controller does not store, or an open/close
    it cannot express: esp-rfid cannot be told to hold a door open)."""
    cred_ids = {d.credential_id for d in batch if d.credential_id is not None}
    creds = (
        {c.id: c for c in session.exec(select(Credential).where(col(Credential.id).in_(cred_ids))).all()}
        if cred_ids
        else {}
    )
    door_ids = {d.door_id for d in batch}
    doors = {ident(d): d for d in session.exec(select(Door).where(col(Door.id).in_(door_ids))).all()}
    names = {
        u.id: u.name
        for u in session.exec(select(User).where(col(User.id).in_({c.user_id for c in creds.values()}))).all()
    }
    users = {c.user_id for c in creds.values()}
    current: dict[tuple[int, int], list[DoorGrant]] = defaultdict(list)
    if creds:
        for g in state_for_doors(session, sorted(doors), now, user_ids=users).grants:
            if g.preload:
                current[(g.door_id, g.credential_id)].append(g)
    # `free` windows: an open/close row holds the door's output released until the window's end,
    # or locks it again (controllers that cannot hold an output answer that there is nothing to do)
    open_doors = sorted({d.door_id for d in batch if d.credential_id is None} & set(doors))
    held: dict[int, datetime] = {}
    if open_doors:
        for h in state_for_doors(session, open_doors, now).hold_open:
            if h.start <= now < h.end:
                held[h.door_id] = max(h.end, held.get(h.door_id, h.end))
    out: dict[int, Command | None] = {}
    for due in batch:
        if due.credential_id is None:
            door = doors.get(due.door_id)
            out[due.id] = (
                HoldOpen(f"t{due.id}-{due.attempts}-{secrets.token_hex(3)}", door.output, held.get(due.door_id))
                if door is not None
                else None
            )
            continue
        cred = creds.get(due.credential_id)
        label = names.get(cred.user_id, str(cred.user_id)) if cred else ""
        out[due.id] = _command(
            due, cred, doors.get(due.door_id), label, current.get((due.door_id, due.credential_id), [])
        )
    return out


def _finish(engine: Engine, worker: str, outcomes: list[tuple[Due, bool, str]], now: datetime) -> None:
    done = [due.id for due, ok, _ in outcomes if ok]
    with write_session(engine) as s:
        if done:
            s.exec(
                update(Transition)
                .where(col(Transition.id).in_(done), col(Transition.claimed_by) == worker)
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
) -> int:
    """Handle every transition due now; returns how many were settled (sent or nothing to send)."""
    if send is None and send_many is None:
        raise ValueError("dispatch_once needs send or send_many")
    worker = worker or "d-" + secrets.token_hex(4)
    settled = 0
    while not stopping():  # checked between batches: a shutdown waits for one batch at most
        at = now or utcnow()
        batch = claim_due(engine, worker, at, limit=limit, lease=lease)
        if not batch:
            return settled
        with read_session(engine) as s:
            commands = commands_for(s, batch, at)
        # One command per (controller, door, credential): the state decides, so duplicates agree.
        groups: dict[tuple, list[Due]] = defaultdict(list)
        for due in batch:
            key = (due.controller_key, due.door_id, due.credential_id) if commands[due.id] else ("none", due.id)
            groups[key].append(due)
        pairs: list[tuple[str, Command]] = [
            (dues[0].controller_key, command)
            for dues in groups.values()
            if (command := commands[dues[0].id]) is not None
        ]
        if not pairs:
            results: list[CommandResult] = []
        elif send_many is not None:
            results = send_many(pairs)
        else:
            assert send is not None  # checked on entry: one of the two is given
            results = _send_each(send, pairs)
        by_command = {command.command_id: result for (_, command), result in zip(pairs, results, strict=True)}
        outcomes = []
        for dues in groups.values():
            command = commands[dues[0].id]
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
        _finish(engine, worker, outcomes, at)
        settled += sum(1 for _, ok, _ in outcomes if ok)
    return settled
