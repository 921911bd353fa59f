"""The single definition of "who may enter": desired door state from access windows and levels.

Pure: no database, no clock. Given the windows (who may enter which resource or door when, in
which mode), the access levels people hold (a door set on a weekly schedule in the site's zone,
expanded here to concrete intervals), the doors serving each resource, and people's
credentials, it returns the grants each door should hold and the intervals each door should be
held open (`free` mode).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

# Modes whose credentials are stored on controllers; `authorized` is decided online instead.
PRELOADED = frozenset({"badge", "badge+authorized"})
ONLINE = frozenset({"authorized", "badge+authorized"})


@dataclass(frozen=True)
class Window:
    """Who may enter when: the doors of `resource_id`, plus `door_id` when given (either may be None)."""

    user_id: int
    resource_id: int | None
    start: datetime
    end: datetime
    mode: str
    source: str  # e.g. "reservation:42"
    door_id: int | None = None

    def doors(self, doors_of: Mapping[int, Sequence[int]]) -> Sequence[int]:
        on_resource = doors_of.get(self.resource_id, ()) if self.resource_id is not None else ()
        if self.door_id is None:
            return on_resource
        return (*on_resource, self.door_id) if self.door_id not in on_resource else on_resource


# ---------------------------------------------------------------- access levels

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_START = datetime(2000, 1, 1, tzinfo=UTC)  # an always-open level's window: stable, whatever "now" is
OPEN_END = datetime(2100, 1, 1, tzinfo=UTC)  # fits esp-rfid's 32-bit validuntil
DAY_END = time.max  # "24:00"


class ScheduleError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_range(text: str) -> tuple[time, time]:
    """'06:00-09:00' -> (06:00, 09:00); '00:00-24:00' is the whole day (end = DAY_END)."""
    parts = text.strip().split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        (h1, m1), (h2, m2) = (tuple(int(x) for x in p.split(":")) for p in parts)
        if not (0 <= h1 <= 23 and 0 <= m1 <= 59 and 0 <= h2 <= 24 and 0 <= m2 <= 59) or (h2 == 24 and m2):
            raise ValueError
    except ValueError:
        raise ScheduleError("invalid_interval", f"{text!r} is not HH:MM-HH:MM") from None
    start, end = time(h1, m1), (DAY_END if h2 == 24 else time(h2, m2))
    if end <= start:
        raise ScheduleError("inverted_interval", f"{text!r} ends before it starts")
    return start, end


def parse_schedule(schedule: Mapping[str, Sequence[str]]) -> dict[str, list[tuple[time, time]]]:
    """Check a weekly schedule: known weekdays, valid ranges, none overlapping another of its day."""
    out: dict[str, list[tuple[time, time]]] = {}
    for day, ranges in schedule.items():
        if day not in WEEKDAYS:
            raise ScheduleError("invalid_weekday", f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
        parsed = sorted(parse_range(r) for r in ranges)
        for (_a1, z1), (a2, _z2) in pairwise(parsed):
            if a2 < z1:
                raise ScheduleError("overlapping_intervals", f"{day}: two ranges overlap")
        if parsed:
            out[day] = parsed
    return out


@dataclass(frozen=True)
class Level:
    """An access level as the definition needs it: doors, weekly local schedule, zone, exceptions."""

    door_ids: tuple[int, ...]
    schedule: Mapping[str, Sequence[str]]
    zone: str
    exceptions: frozenset[date] = field(default_factory=frozenset)
    valid_from: date | None = None
    valid_until: date | None = None  # inclusive: the last local day it opens
    mode: str = "badge"

    @property
    def always(self) -> bool:
        """Open all day every day with no exception: one window, not one per day."""
        days = parse_schedule(self.schedule)
        return not self.exceptions and all(days.get(d) == [(time(0), DAY_END)] for d in WEEKDAYS)


@dataclass(frozen=True)
class Holding:
    """A person holding a level; `source` explains the grants (e.g. "level:7")."""

    user_id: int
    level: Level
    source: str


def level_intervals(level: Level, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The UTC intervals the level opens that meet [start, end), whole (not clipped), merged when
    they touch. Each local day's ranges are placed at their wall-clock times in the level's zone,
    so a 06:00 opening stays at 06:00 across DST changes (a time the clock skips falls at the
    same instant as the skip)."""
    zone = ZoneInfo(level.zone)

    def at(day: date, t: time) -> datetime:
        if t == DAY_END:
            return datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC)
        return datetime.combine(day, t, zone).astimezone(UTC)

    first = level.valid_from
    after = level.valid_until + timedelta(days=1) if level.valid_until else None
    if level.always:
        lo = at(first, time(0)) if first else ALWAYS_START
        hi = at(after, time(0)) if after else OPEN_END
        return [(lo, hi)] if lo < hi and lo < end and hi > start else []
    days = parse_schedule(level.schedule)
    out: list[tuple[datetime, datetime]] = []
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        if day not in level.exceptions and (first is None or day >= first) and (after is None or day < after):
            for a, z in days.get(WEEKDAYS[day.weekday()], ()):
                lo, hi = at(day, a), at(day, z)
                if lo < hi and lo < end and hi > start:
                    if out and lo <= out[-1][1]:
                        out[-1] = (out[-1][0], max(out[-1][1], hi))
                    else:
                        out.append((lo, hi))
        day += timedelta(days=1)
    return out


def level_windows(holding: Holding, start: datetime, end: datetime) -> list[Window]:
    """A holding's windows over [start, end): one per interval and door."""
    return [
        Window(holding.user_id, None, lo, hi, holding.level.mode, holding.source, door)
        for lo, hi in level_intervals(holding.level, start, end)
        for door in holding.level.door_ids
    ]


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
    if len(items) == 1:  # the usual case (one booking per door and card): nothing to merge
        return items
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
    levels: Iterable[Holding] = (),
    horizon: tuple[datetime, datetime] | None = None,
) -> DesiredState:
    """`levels` are expanded over `horizon` (required when levels are given) into door windows."""
    held = list(levels)
    if held:
        if horizon is None:
            raise ValueError("levels need a horizon to be expanded over")
        windows = [*windows, *(w for h in held for w in level_windows(h, *horizon))]
    creds_of: dict[int, list[Cred]] = defaultdict(list)
    for c in credentials:
        creds_of[c.user_id].append(c)
    grant_parts: dict[tuple[int, int], list] = defaultdict(list)
    open_parts: dict[int, list] = defaultdict(list)
    mode_sets: dict[str, frozenset[str]] = {}  # the sets are shared, never changed (see _merge)
    for w in windows:
        if w.end <= w.start:
            continue
        source = frozenset((w.source,))
        if w.mode == "free":
            for door in w.doors(doors_of):
                open_parts[door].append((w.start, w.end, frozenset(), source))
            continue
        modes = mode_sets.get(w.mode)
        if modes is None:
            modes = mode_sets[w.mode] = frozenset((w.mode,))
        creds = creds_of.get(w.user_id, ())
        if not creds:
            continue
        for door in w.doors(doors_of):
            for c in creds:
                start = max(w.start, c.valid_from) if c.valid_from else w.start
                end = min(w.end, c.valid_until) if c.valid_until else w.end
                if start < end:
                    grant_parts[(door, c.id)].append((start, end, modes, source))
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
