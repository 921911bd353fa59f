"""The single definition of "who may enter": desired door state from access windows.

Pure: no database, no clock. Given the windows (who may enter which resource when, in which
mode), the doors serving each resource, and people's credentials, it returns the grants each
door should hold and the intervals each door should be held open (`free` mode).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

# Modes whose credentials are stored on controllers; `authorized` is decided online instead.
PRELOADED = frozenset({"badge", "badge+authorized"})
ONLINE = frozenset({"authorized", "badge+authorized"})


@dataclass(frozen=True)
class Window:
    user_id: int
    resource_id: int
    start: datetime
    end: datetime
    mode: str
    source: str  # e.g. "reservation:42"


@dataclass(frozen=True)
class Cred:
    id: int
    user_id: int
    kind: str
    value: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class DoorGrant:
    door_id: int
    credential_id: int
    valid_from: datetime
    valid_until: datetime
    modes: frozenset[str]
    sources: frozenset[str]

    @property
    def preload(self) -> bool:
        return bool(self.modes & PRELOADED)

    @property
    def online(self) -> bool:
        return bool(self.modes & ONLINE)


@dataclass(frozen=True)
class HoldOpen:
    door_id: int
    start: datetime
    end: datetime
    sources: frozenset[str]


@dataclass(frozen=True)
class DesiredState:
    grants: tuple[DoorGrant, ...]
    hold_open: tuple[HoldOpen, ...]

    def grants_for(self, door_id: int) -> list[DoorGrant]:
        return [g for g in self.grants if g.door_id == door_id]


def _merge(items: list[tuple[datetime, datetime, frozenset[str], frozenset[str]]]):
    """Union of overlapping or touching intervals, carrying modes and sources along."""
    out: list[list] = []
    for start, end, modes, sources in sorted(items, key=lambda x: (x[0], x[1])):
        if out and start <= out[-1][1]:
            last = out[-1]
            last[1] = max(last[1], end)
            last[2] |= modes
            last[3] |= sources
        else:
            out.append([start, end, set(modes), set(sources)])
    return [(a, z, frozenset(m), frozenset(s)) for a, z, m, s in out]


def desired_state(
    windows: Iterable[Window],
    doors_of: Mapping[int, Sequence[int]],
    credentials: Iterable[Cred],
) -> DesiredState:
    creds_of: dict[int, list[Cred]] = defaultdict(list)
    for c in credentials:
        creds_of[c.user_id].append(c)
    grant_parts: dict[tuple[int, int], list] = defaultdict(list)
    open_parts: dict[int, list] = defaultdict(list)
    for w in windows:
        if w.end <= w.start:
            continue
        for door in doors_of.get(w.resource_id, ()):
            if w.mode == "free":
                open_parts[door].append((w.start, w.end, frozenset(), frozenset({w.source})))
                continue
            for c in creds_of.get(w.user_id, ()):
                start = max(w.start, c.valid_from) if c.valid_from else w.start
                end = min(w.end, c.valid_until) if c.valid_until else w.end
                if start < end:
                    grant_parts[(door, c.id)].append((start, end, frozenset({w.mode}), frozenset({w.source})))
    grants = [
        DoorGrant(door, cred, a, z, modes, sources)
        for (door, cred), parts in grant_parts.items()
        for a, z, modes, sources in _merge(parts)
    ]
    holds = [HoldOpen(door, a, z, sources) for door, parts in open_parts.items() for a, z, _m, sources in _merge(parts)]
    grants.sort(key=lambda g: (g.door_id, g.valid_from, g.credential_id))
    holds.sort(key=lambda h: (h.door_id, h.start))
    return DesiredState(tuple(grants), tuple(holds))


def may_enter(state: DesiredState, door_id: int, credential_id: int, at: datetime) -> bool:
    """Reference answer for an online decision (the gateway keeps an index of the same grants)."""
    return any(
        g.door_id == door_id and g.credential_id == credential_id and g.valid_from <= at < g.valid_until
        for g in state.grants
    )
