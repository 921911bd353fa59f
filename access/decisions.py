"""Online decisions: "may this credential open this door now?", answered from memory.

For `authorized` modes the gateway, not the controller, decides each presentation, so a
revocation takes effect at the next presentation. The index holds, per credential, its owner and
validity, and per user the windows (resource, start, end, mode, source) that have not ended; a
decision is two dict lookups and a scan of that one user's windows (each on a resource, whose
doors are looked up, or on one door: access levels, doors added to a booking, visits). It answers exactly what
`access.desired.may_enter` answers for the same rows (a test checks the two against each other).

It is kept in step with the database through `access_change`, a log that every writer of windows
and credentials appends to in its own transaction: `refresh` replays the log from the last id it
saw, so every gateway node converges whoever made the change. A node that fell behind the log's
trimming reloads in full.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, bindparam, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, delete, select

from access.desired import ONLINE
from access.models import AccessChange, AccessWindow, Controller, Credential, Door, DoorResource, lookup_token
from access.protocol import card_spellings, presented_key
from core.db import ident, read_session, utcnow

log = logging.getLogger("bookgate.decisions")

KEEP_CHANGES = timedelta(hours=6)
LATE = timedelta(seconds=30)  # how long a writer may sit between logging a change and committing it


def note_source(session: Session, source: str) -> None:
    session.add(AccessChange(kind="source", ref=source))


def note_credential(session: Session, credential_id: int) -> None:
    session.add(AccessChange(kind="credential", ref=str(credential_id)))


def note_doors(session: Session) -> None:
    session.add(AccessChange(kind="doors", ref="*"))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # granted, unknown_credential, credential_not_valid, no_window, unknown_door
    credential_id: int | None = None
    user_id: int | None = None
    source: str | None = None
    online: bool = False  # the allowing window's mode asks for an online decision


@dataclass(frozen=True, slots=True)
class _Cred:
    id: int
    user_id: int
    valid_from: float | None
    valid_until: float | None


# (resource_id, door_id, start, end, online mode, source): one of the two targets is set (the
# other None); times as POSIX seconds for cheap comparisons
_Win = tuple[int | None, int | None, float, float, bool, str]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# Built once (the last change seen and the re-read horizon bound per call): four times a second.
_CHANGES_SINCE = (
    select(AccessChange.id, AccessChange.kind, AccessChange.ref, AccessChange.at)
    .where(or_(col(AccessChange.id) > bindparam("last"), col(AccessChange.at) >= bindparam("horizon")))
    .order_by(col(AccessChange.id))
)
_SOURCE_WINDOWS = select(AccessWindow).where(
    col(AccessWindow.source_type) == bindparam("stype"),
    col(AccessWindow.source_id).in_(bindparam("ids", expanding=True)),
)


class DecisionIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # badges under ("badge:<spelling>", spelled) for each way a reader may spell them; else (kind, value)
        self._creds: dict[tuple[str, str], _Cred] = {}
        self._cred_key: dict[int, tuple[tuple[str, str], ...]] = {}
        self._windows: dict[int, dict[str, tuple[_Win, ...]]] = defaultdict(dict)
        self._users_of: dict[str, set[int]] = defaultdict(set)
        self._resources_of_door: dict[int, frozenset[int]] = {}
        self._door_at: dict[tuple[str, int], int] = {}
        self._door_key: dict[str, int] = {}
        self.last_change = 0
        self._recent: set[int] = set()
        self.loaded = False

    # ------------------------------------------------------------------ loading

    def load(self, session: Session, now: datetime | None = None) -> None:
        """Read everything that can still matter: live credentials and windows not yet over.

        Rows are streamed as plain tuples in source order (no ORM objects, no second copy held),
        built into fresh tables and swapped in at once, so decisions never see a half-loaded index."""
        now = now or utcnow()
        last = session.exec(select(func.max(AccessChange.id))).one() or 0
        # entries already visible are in what is loaded below; later ones below `last` are not
        seen = {i for i in session.exec(select(AccessChange.id).where(col(AccessChange.at) >= now - LATE)).all() if i}
        fresh = DecisionIndex()
        creds = session.execute(
            sa_select(
                col(Credential.id),
                col(Credential.user_id),
                col(Credential.kind),
                col(Credential.format),
                col(Credential.value),
                col(Credential.valid_from),
                col(Credential.valid_until),
                col(Credential.revoked_at),
            )
            .where(col(Credential.revoked_at).is_(None))
            .execution_options(yield_per=5000)
        )
        for c in creds:
            fresh._put_cred(c)
        windows = session.execute(
            sa_select(
                col(AccessWindow.source_type),
                col(AccessWindow.source_id),
                col(AccessWindow.user_id),
                col(AccessWindow.resource_id),
                col(AccessWindow.door_id),
                col(AccessWindow.start),
                col(AccessWindow.end),
                col(AccessWindow.mode),
            )
            .where(col(AccessWindow.end) > now)
            .order_by(col(AccessWindow.source_type), col(AccessWindow.source_id))
            .execution_options(yield_per=5000)
        )
        current: str | None = None
        rows: list = []
        for w in windows:
            source = f"{w.source_type}:{w.source_id}"
            if source != current:
                if current is not None:
                    fresh._put_source(current, rows)
                current, rows = source, []
            rows.append(w)
        if current is not None:
            fresh._put_source(current, rows)
        fresh._load_doors(session)
        with self._lock:
            self._creds, self._cred_key = fresh._creds, fresh._cred_key
            self._windows, self._users_of = fresh._windows, fresh._users_of
            self._resources_of_door, self._door_at, self._door_key = (
                fresh._resources_of_door,
                fresh._door_at,
                fresh._door_key,
            )
            self.last_change = last
            self._recent = seen
            self.loaded = True

    def _load_doors(self, session: Session) -> None:
        keys = {c.id: c.key for c in session.exec(select(Controller)).all()}
        links: dict[int, set[int]] = defaultdict(set)
        for link in session.exec(select(DoorResource)).all():
            links[link.door_id].add(link.resource_id)
        self._resources_of_door = {}
        self._door_at = {}
        self._door_key = {}
        for d in session.exec(select(Door).where(Door.active)).all():
            door_id = ident(d)
            self._resources_of_door[door_id] = frozenset(links.get(door_id, ()))
            self._door_at[(keys[d.controller_id], d.output)] = door_id
            self._door_key[d.key] = door_id

    def _put_cred(self, c: Credential | Row[Any]) -> None:
        for old in self._cred_key.pop(ident(c), ()):
            self._creds.pop(old, None)
        if c.revoked_at is not None:
            return
        if c.kind == "badge":
            keys = tuple((f"badge:{sp}", v) for sp, v in card_spellings(c.format, c.value).items())
        else:
            keys = ((c.kind, c.value),)
        entry = _Cred(ident(c), c.user_id, _ts(c.valid_from), _ts(c.valid_until))
        for key in keys:
            self._creds[key] = entry
        self._cred_key[ident(c)] = keys

    def _put_source(self, source: str, rows: list[AccessWindow]) -> None:
        """Replace one source's windows. Each affected person's table is rebuilt aside and swapped in
        whole, so a decision made meanwhile (without the lock) sees the old windows or the new ones,
        never a moment with neither."""
        by_user: dict[int, list[_Win]] = defaultdict(list)
        for w in rows:
            if w.mode == "free":
                continue  # a held-open door grants nobody in particular
            by_user[w.user_id].append(
                (w.resource_id, w.door_id, w.start.timestamp(), w.end.timestamp(), w.mode in ONLINE, source)
            )
        before = self._users_of.pop(source, set())
        for uid in before | set(by_user):
            per_user = {k: v for k, v in self._windows.get(uid, {}).items() if k != source}
            if uid in by_user:
                per_user[source] = tuple(by_user[uid])
            if per_user:
                self._windows[uid] = per_user
            else:
                self._windows.pop(uid, None)
        if by_user:
            self._users_of[source] = set(by_user)

    def refresh(self, session: Session, now: datetime | None = None) -> int:
        """Replay the change log since the last call; returns how many entries were applied.

        Ids are handed out at insert but become visible at commit, so a slow transaction can
        publish an id below one already seen: the last `LATE` seconds are re-read every time and
        entries not applied yet are applied then."""
        if not self.loaded:
            self.load(session, now)
            return 0
        horizon = (now or utcnow()) - LATE
        # Plain column rows: at a steady rate of writes the re-read window holds thousands of entries
        # already applied, and this runs four times a second.
        rows: list[Any] = session.exec(  # type: ignore[assignment]
            _CHANGES_SINCE, params={"last": self.last_change, "horizon": horizon}
        ).all()
        changes = [c for c in rows if c.id not in self._recent]
        if not changes:
            return 0
        if self.last_change > 0 and ident(changes[-1]) > self.last_change + 1:
            oldest = session.exec(select(func.min(AccessChange.id))).one()
            if oldest is not None and oldest > self.last_change + 1:
                # The log was trimmed past what this node saw: reload rather than miss changes.
                log.info("decision index fell behind the change log; reloading")
                self.load(session, now)
                self._recent = {ident(c) for c in rows if c.at >= horizon}
                return len(changes)
        sources = {c.ref for c in changes if c.kind == "source"}
        cred_ids = {int(c.ref) for c in changes if c.kind == "credential"}
        doors = any(c.kind == "doors" for c in changes)
        windows: dict[str, list[AccessWindow]] = defaultdict(list)
        if sources:
            pairs = [s.split(":", 1) for s in sources]
            for stype in {p[0] for p in pairs}:
                ids = [int(p[1]) for p in pairs if p[0] == stype]
                for w in session.exec(_SOURCE_WINDOWS, params={"stype": stype, "ids": ids}).all():
                    windows[f"{w.source_type}:{w.source_id}"].append(w)
        creds = session.exec(select(Credential).where(col(Credential.id).in_(cred_ids))).all() if cred_ids else []
        with self._lock:
            for source in sources:
                self._put_source(source, windows.get(source, []))
            found = set()
            for c in creds:
                self._put_cred(c)
                found.add(c.id)
            for gone in cred_ids - found:  # deleted with its user
                for key in self._cred_key.pop(gone, ()):
                    self._creds.pop(key, None)
            if doors:
                self._load_doors(session)
            self.last_change = max(self.last_change, ident(changes[-1]))
            self._recent = {ident(c) for c in rows if c.at >= horizon}
        return len(changes)

    def drop_ended(self, now: datetime) -> int:
        """Forget windows that are over (memory stays proportional to live grants)."""
        t = now.timestamp()
        dropped = 0
        with self._lock:
            for uid, per_user in list(self._windows.items()):
                ended = [source for source, wins in per_user.items() if all(w[3] <= t for w in wins)]
                if not ended:
                    continue
                for source in ended:
                    self._users_of[source].discard(uid)
                    if not self._users_of[source]:
                        del self._users_of[source]
                dropped += len(ended)
                kept = {k: v for k, v in per_user.items() if k not in ended}
                if kept:
                    self._windows[uid] = kept  # swapped whole, as in _put_source
                else:
                    del self._windows[uid]
        return dropped

    # ------------------------------------------------------------------ deciding

    def door_id(self, controller_key: str, output: int) -> int | None:
        return self._door_at.get((controller_key, output))

    def door_by_key(self, key: str) -> int | None:
        return self._door_key.get(key)

    def find(self, kind: str, value: str, spellings: tuple[str, ...] = ("hex",)) -> _Cred | None:
        """The live credential a presented value names (badges: in each spelling the reader may use)."""
        if kind != "badge":  # PINs and BLE keys are indexed by their keyed token, as stored
            return self._creds.get((kind, lookup_token(kind, value)))
        for spelling in spellings:
            key = presented_key(spelling, value)
            cred = self._creds.get((f"badge:{spelling}", key)) if key is not None else None
            if cred is not None:
                return cred
        return None

    def decide(
        self, door_id: int, kind: str, value: str, at: datetime, spellings: tuple[str, ...] = ("hex",)
    ) -> Decision:
        t = at.timestamp()
        resources = self._resources_of_door.get(door_id)
        if resources is None:
            return Decision(False, "unknown_door")
        cred = self.find(kind, value, spellings)
        if cred is None:
            return Decision(False, "unknown_credential")
        if (cred.valid_from is not None and t < cred.valid_from) or (
            cred.valid_until is not None and t >= cred.valid_until
        ):
            return Decision(False, "credential_not_valid", cred.id, cred.user_id)
        best: _Win | None = None
        for wins in tuple(self._windows.get(cred.user_id, {}).values()):
            for w in wins:
                if (
                    w[2] <= t < w[3]
                    and (w[1] == door_id or w[0] in resources)
                    and (best is None or (w[4] and not best[4]))
                ):
                    best = w
        if best is None:
            return Decision(False, "no_window", cred.id, cred.user_id)
        return Decision(True, "granted", cred.id, cred.user_id, best[5], best[4])

    def size(self) -> dict[str, int]:
        return {
            "credentials": len(self._creds),
            "users": len(self._windows),
            "windows": sum(len(w) for per in self._windows.values() for w in per.values()),
        }


def trim_changes(session: Session, now: datetime) -> None:
    """The log only has to outlive the slowest node's refresh; a node further behind reloads."""
    session.exec(delete(AccessChange).where(col(AccessChange.at) < now - KEEP_CHANGES))


class IndexKeeper:
    """Keeps one node's index fresh: a thread replays the change log every `every` seconds."""

    def __init__(self, engine: Engine, index: DecisionIndex, every: float = 0.25) -> None:
        self.engine = engine
        self.index = index
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with read_session(self.engine) as s:
            self.index.load(s)
        self._thread = threading.Thread(target=self._run, name="decision-index", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self.every):
            try:
                with read_session(self.engine) as s:
                    self.index.refresh(s)
                ticks += 1
                if ticks % 240 == 0:
                    self.index.drop_ended(utcnow())
            except Exception:
                log.exception("refreshing the decision index failed; the next tick retries")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
