"""The live feed of arrivals and departures, for every gateway node.

Writers add a `visit_event` row in the transaction of the check-in or check-out. Each node runs
one poller (`VisitFeed`) while someone listens: it reads rows past the last id it saw and fans
them out to its connected clients, whichever node wrote them. Ids are handed out at insert and
become visible at commit, so a slow transaction can publish an id below one already seen: the
last `LATE` seconds are read again each time and rows not sent yet are sent then (as
`access.decisions` replays its change log).

Polling a change table was chosen over PostgreSQL's LISTEN/NOTIFY: it is the same code on
SQLite, survives a dropped connection without losing what was written meanwhile (the cursor
is an id), and one query per node per tick serves any number of clients (see bench/visit_checkin.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core.db import read_session, utcnow
from core.models import User
from vms.models import Visit, VisitEvent, Visitor

log = logging.getLogger("bookgate.vms.events")

LATE = timedelta(seconds=30)
MAX_BATCH = 500


def describe(session: Session, rows: list[VisitEvent]) -> list[dict[str, Any]]:
    """What a board shows of each event (names are the reception's to see)."""
    if not rows:
        return []
    visits = {v.id: v for v in session.exec(select(Visit).where(col(Visit.id).in_({r.visit_id for r in rows}))).all()}
    visitors = {
        v.id: v
        for v in session.exec(select(Visitor).where(col(Visitor.id).in_({v.visitor_id for v in visits.values()}))).all()
    }
    hosts = {
        u.id: u.name
        for u in session.exec(select(User).where(col(User.id).in_({v.host_id for v in visits.values()}))).all()
    }
    out = []
    for r in rows:
        visit = visits.get(r.visit_id)
        visitor = visitors.get(visit.visitor_id) if visit else None
        out.append(
            {
                "id": r.id,
                "site_id": r.site_id,
                "kind": r.kind,
                "visit_id": r.visit_id,
                "name": visitor.name if visitor else "",
                "company": (visitor.company or "") if visitor else "",
                "host": hosts.get(visit.host_id, "") if visit else "",
                "status": visit.status if visit else "",
                "at": r.at.isoformat(),
            }
        )
    return out


@dataclass
class Cursor:
    """Where one node's poller is: the last id read, and the ids of the last `LATE` seconds it has
    sent (a row committed late, below `last`, is found among those and sent once)."""

    last: int = 0
    recent: dict[int, datetime] = field(default_factory=dict)

    def read(self, session: Session, now: datetime) -> list[VisitEvent]:
        horizon = now - LATE
        new = list(
            session.exec(
                select(VisitEvent).where(col(VisitEvent.id) > self.last).order_by(col(VisitEvent.id)).limit(MAX_BATCH)
            ).all()
        )
        window = session.exec(
            select(VisitEvent.id).where(col(VisitEvent.at) >= horizon, col(VisitEvent.id) <= self.last)
        ).all()
        missed = [i for i in window if i is not None and i not in self.recent]
        late = (
            list(session.exec(select(VisitEvent).where(col(VisitEvent.id).in_(missed))).all())[:MAX_BATCH]
            if missed
            else []
        )
        fresh = sorted(late + new, key=lambda r: r.id or 0)
        if new:
            self.last = max(self.last, new[-1].id or 0)
        for r in fresh:
            if r.id is not None:
                self.recent[r.id] = r.at
        self.recent = {i: at for i, at in self.recent.items() if at >= horizon}
        return fresh


def head(session: Session) -> int:
    return session.exec(select(func.max(VisitEvent.id))).one() or 0


@dataclass(eq=False)
class _Listener:
    sites: frozenset[int] | None  # None: every site (admins)
    queue: asyncio.Queue[dict[str, Any]]
    dropped: bool = False


class VisitFeed:
    """One node's poller and its listeners; built by the app factory, held on ``app.state``."""

    def __init__(self, engine: Engine, every: float = 0.2, ping: float = 15.0) -> None:
        self.engine = engine
        self.every = every
        self.ping = ping  # a comment line this often: proxies keep the stream, a gone client is noticed
        self._listeners: set[_Listener] = set()
        self._task: asyncio.Task[None] | None = None
        self._cursor: Cursor | None = None
        self.polls = 0

    def _poll(self) -> list[dict[str, Any]]:
        with read_session(self.engine) as s:
            if self._cursor is None:
                # Start at the head, with the last LATE seconds read again on the first tick: an
                # event committed while this listener connected is delivered (boards apply them
                # idempotently), none is lost.
                self._cursor = Cursor(last=head(s))
            return describe(s, self._cursor.read(s, utcnow()))

    async def _run(self) -> None:
        try:
            while self._listeners:
                try:
                    events = await anyio.to_thread.run_sync(self._poll)
                    self.polls += 1
                except Exception:
                    log.exception("reading visit events failed; the next tick retries")
                    events = []
                for event in events:
                    event["json"] = json.dumps(event)  # encoded once, whatever the number of listeners
                    for listener in list(self._listeners):
                        if listener.sites is None or event["site_id"] in listener.sites:
                            try:
                                listener.queue.put_nowait(event)
                            except asyncio.QueueFull:
                                # A client that reads nothing is let go (a browser reconnects) rather
                                # than holding every other listener's events or the node's memory.
                                listener.dropped = True
                                self._listeners.discard(listener)
                await asyncio.sleep(self.every)
        finally:
            self._task = None
            self._cursor = None

    async def subscribe(self, sites: frozenset[int] | None) -> AsyncIterator[dict[str, Any]]:
        listener = _Listener(sites, asyncio.Queue(maxsize=10_000))
        self._listeners.add(listener)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            while not (listener.dropped and listener.queue.empty()):
                yield await listener.queue.get()
        finally:
            self._listeners.discard(listener)

    def listening(self) -> int:
        return len(self._listeners)
