"""The dispatcher: claims due transitions and brings each (door, credential) to its desired state.

Several gateway nodes may run it at once: rows are claimed with a lease under
`FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises writers), so none is lost or doubled.
What to send is decided at send time from the desired state, not read from the row: a grant
that comes late after its window sends a revoke, and a revoke while another booking still
covers the credential re-sends the grant with the merged window.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_
from sqlmodel import col, select, update

from access.models import Controller, Credential, Door, Transition
from access.protocol import Command, CommandResult, Grant, Revoke
from access.service import state_for_doors
from bookgate import audit
from bookgate.audit import SYSTEM
from bookgate.db import read_session, utcnow, write_session
from bookgate.models import User

log = logging.getLogger("bookgate.dispatch")

MAX_ATTEMPTS = 6
LEASE = timedelta(seconds=60)

Send = Callable[[str, Command], CommandResult]


@dataclass(frozen=True)
class Due:
    id: int
    controller_key: str
    door_id: int
    credential_id: int | None
    action: str
    attempts: int


def claim_due(engine: Engine, worker: str, now: datetime, *, limit: int = 500) -> list[Due]:
    with write_session(engine) as s:
        rows = s.exec(
            select(Transition)
            .where(
                Transition.status == "pending",
                Transition.due_at <= now,
                or_(col(Transition.claimed_until).is_(None), Transition.claimed_until < now),
            )
            .order_by(Transition.due_at, Transition.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        keys = {c.id: c.key for c in s.exec(select(Controller)).all()} if rows else {}
        out = []
        for t in rows:
            t.claimed_by, t.claimed_until, t.attempts = worker, now + LEASE, t.attempts + 1
            s.add(t)
            out.append(Due(t.id, keys[t.controller_id], t.door_id, t.credential_id, t.action, t.attempts))  # type: ignore[arg-type]
        return out


def command_for(engine: Engine, due: Due, now: datetime) -> Command | None:
    """The command that makes the controller match the desired state now; None if nothing to send
    (a credential kind this controller does not store, or an open/close it cannot express)."""
    if due.credential_id is None:
        return None  # holding a door open is not something esp-rfid can be told; see the notes
    with read_session(engine) as s:
        cred = s.get(Credential, due.credential_id)
        door = s.get(Door, due.door_id)
        if cred is None or door is None or cred.kind != "badge":
            return None
        user = s.get(User, cred.user_id)
        state = state_for_doors(s, [door.id], now)  # type: ignore[list-item]
    command_id = f"t{due.id}-{due.attempts}-{secrets.token_hex(3)}"
    current = [g for g in state.grants_for(door.id) if g.credential_id == cred.id and g.preload]  # type: ignore[arg-type]
    if cred.revoked_at is None and current:
        g = current[0]  # the earliest window still to come or under way
        return Grant(
            command_id, door.output, cred.value, user.name if user else str(cred.user_id), g.valid_from, g.valid_until
        )
    return Revoke(command_id, door.output, cred.value)


def _finish(engine: Engine, due: Due, worker: str, ok: bool, detail: str, now: datetime) -> None:
    values: dict = {"claimed_until": None}
    if ok:
        values |= {"status": "done", "done_at": now}
    elif due.attempts >= MAX_ATTEMPTS:
        values |= {"status": "failed", "last_error": detail[:500]}
    else:
        values |= {"due_at": now + timedelta(seconds=min(300, 2**due.attempts)), "last_error": detail[:500]}
    with write_session(engine) as s:
        s.exec(update(Transition).where(Transition.id == due.id, Transition.claimed_by == worker).values(**values))
        if values.get("status") == "failed":
            # The alert: the controller is degraded (shown by /api/v1/controllers) and it is audited.
            s.exec(update(Controller).where(Controller.key == due.controller_key).values(state="degraded"))
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


def dispatch_once(
    engine: Engine, send: Send, *, worker: str | None = None, now: datetime | None = None, limit: int = 500
) -> int:
    """Handle every transition due now; returns how many were settled (sent or nothing to send)."""
    worker = worker or "d-" + secrets.token_hex(4)
    settled = 0
    while True:
        at = now or utcnow()
        batch = claim_due(engine, worker, at, limit=limit)
        if not batch:
            return settled
        for due in batch:
            command = command_for(engine, due, at)
            if command is None:
                _finish(engine, due, worker, True, "nothing to send", at)
                settled += 1
                continue
            try:
                result = send(due.controller_key, command)
            except Exception as exc:  # ControllerUnavailable and friends: retry later, never open anything
                result = CommandResult(command.command_id, False, f"{type(exc).__name__}: {exc}")
            _finish(engine, due, worker, result.ok, result.detail, at)
            settled += int(result.ok)
            if not result.ok:
                log.warning(
                    "transition %s to %s failed (attempt %s): %s",
                    due.id,
                    due.controller_key,
                    due.attempts,
                    result.detail,
                )
