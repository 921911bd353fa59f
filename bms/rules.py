"""Effective booking rules of a resource and the checks a requested time must pass.

Times of day (opening hours, the slot grid) are read in the site's zone; instants are UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from config.site import WEEKDAYS, AccessPolicy, Blackout, Budget, Moderation, Rules, merge_rules, parse_time_range
from core.errors import Invalid

HARD_DEFAULTS = Rules(
    slot_minutes=30,
    min_minutes=30,
    max_minutes=24 * 60,
    buffer_minutes=0,
    opening_hours={d: ["00:00-24:00"] for d in WEEKDAYS},
    blackouts=[],
    notice_min_minutes=0,
    notice_max_days=365,
    change_deadline_minutes=0,
    max_changes=10,
    max_beneficiaries=10,
    self_service=True,
    moderation=Moderation.auto,
    pending_expiry_hours=48,
    max_active_per_user=500,
    budgets=[],
)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: instances are cached
class EffectiveRules:
    """The rules in force for one resource: hard defaults, then site, venue and resource layers."""

    tz: ZoneInfo
    slot: timedelta
    min_len: timedelta
    max_len: timedelta
    buffer: timedelta
    opening: dict[int, list[tuple[time, time]]]  # weekday (0 = Monday) -> ranges
    blackouts: list[Blackout]
    notice_min: timedelta
    notice_max: timedelta
    change_deadline: timedelta
    max_changes: int
    max_beneficiaries: int
    self_service: bool
    moderation: Moderation
    pending_expiry: timedelta
    max_active_per_user: int
    budgets: list[Budget]
    access: AccessPolicy

    @classmethod
    def build(cls, timezone: str, site: dict, venue: dict, resource: dict, access: dict) -> EffectiveRules:
        """Cached by content: the same rule layers always give the same (read-only) object."""
        return _build_cached(timezone, *(json.dumps(x or {}, sort_keys=True) for x in (site, venue, resource, access)))

    @classmethod
    def _build(cls, timezone: str, site: dict, venue: dict, resource: dict, access: dict) -> EffectiveRules:
        r = merge_rules(HARD_DEFAULTS, site, venue, resource)
        return cls(
            tz=ZoneInfo(timezone),
            slot=timedelta(minutes=r.slot_minutes or 30),
            min_len=timedelta(minutes=r.min_minutes or r.slot_minutes or 30),
            max_len=timedelta(minutes=r.max_minutes or 24 * 60),
            buffer=timedelta(minutes=r.buffer_minutes or 0),
            opening={
                i: [parse_time_range(x) for x in (r.opening_hours or {}).get(day, [])] for i, day in enumerate(WEEKDAYS)
            },
            blackouts=list(r.blackouts or []),
            notice_min=timedelta(minutes=r.notice_min_minutes or 0),
            notice_max=timedelta(days=r.notice_max_days if r.notice_max_days is not None else 365),
            change_deadline=timedelta(minutes=r.change_deadline_minutes or 0),
            max_changes=r.max_changes if r.max_changes is not None else 10,
            max_beneficiaries=r.max_beneficiaries if r.max_beneficiaries is not None else 10,
            self_service=r.self_service if r.self_service is not None else True,
            moderation=r.moderation or Moderation.auto,
            pending_expiry=timedelta(hours=r.pending_expiry_hours or 48),
            max_active_per_user=r.max_active_per_user or 500,
            budgets=list(r.budgets or []),
            access=AccessPolicy.model_validate(access or {}),
        )

    # ------------------------------------------------------------ access window

    def access_window(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """restrict .. release: when the beneficiaries' credentials open the doors."""
        restrict = self.access.restrict
        release = self.access.release
        before = 0 if restrict == "at_start" else restrict.offset_minutes
        after = 0 if release == "at_end" else release.offset_minutes
        a_start = start - timedelta(minutes=before)
        a_end = max(end + timedelta(minutes=after), start)
        return a_start, a_end

    # ------------------------------------------------------------ checks

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz)

    def on_grid(self, instant: datetime) -> bool:
        loc = self.local(instant)
        minutes = loc.hour * 60 + loc.minute
        step = int(self.slot.total_seconds() // 60)
        return loc.second == 0 and loc.microsecond == 0 and minutes % step == 0

    def within_opening(self, start: datetime, end: datetime) -> bool:
        """Every local day the booking touches must have one opening range covering its part."""
        loc_start, loc_end = self.local(start), self.local(end)
        day = loc_start.date()
        while True:
            day_start = datetime.combine(day, time.min, self.tz)
            next_day = datetime.combine(day + timedelta(days=1), time.min, self.tz)
            seg_a = max(loc_start, day_start)
            seg_b = min(loc_end, next_day)
            if seg_a < seg_b and not self._covered(day, seg_a, seg_b):
                return False
            if loc_end <= next_day:
                return True
            day += timedelta(days=1)

    def _covered(self, day: date, a: datetime, b: datetime) -> bool:
        for open_t, close_t in self.opening.get(day.weekday(), []):
            lo = datetime.combine(day, open_t, self.tz)
            hi = (
                datetime.combine(day + timedelta(days=1), time.min, self.tz)
                if close_t == time.max
                else datetime.combine(day, close_t, self.tz)
            )
            if lo <= a and b <= hi:
                return True
        return False

    def blackout_hit(self, start: datetime, end: datetime) -> Blackout | None:
        for b in self.blackouts:
            if b.start < end and start < b.end:
                return b
        return None

    def check_times(self, start: datetime, end: datetime, now: datetime, *, privileged: bool = False) -> None:
        """Every rule about *when*: raise a 422 with a code on the first one broken."""
        if end <= start:
            raise Invalid("invalid_range", "the end must be after the start", field="end")
        if not (self.on_grid(start) and self.on_grid(end)):
            step = int(self.slot.total_seconds() // 60)
            raise Invalid("off_grid", f"bookings start and end on a {step}-minute grid (local time)", field="start")
        length = end - start
        if length < self.min_len:
            raise Invalid("too_short", f"at least {int(self.min_len.total_seconds() // 60)} minutes", field="end")
        if length > self.max_len:
            raise Invalid("too_long", f"at most {int(self.max_len.total_seconds() // 60)} minutes", field="end")
        if not self.within_opening(start, end):
            raise Invalid("outside_opening_hours", "the resource is closed during part of this time", field="start")
        hit = self.blackout_hit(start, end)
        if hit is not None:
            raise Invalid(
                "blackout",
                f"closed: {hit.reason or 'blackout period'}",
                field="start",
                blackout={"start": hit.start.isoformat(), "end": hit.end.isoformat()},
            )
        if start < now:
            raise Invalid("in_the_past", "the start is in the past", field="start")
        if privileged:
            return
        if start - now < self.notice_min:
            raise Invalid(
                "too_late_to_book",
                f"book at least {int(self.notice_min.total_seconds() // 60)} minutes ahead",
                field="start",
            )
        if start - now > self.notice_max:
            raise Invalid("too_far_ahead", f"book at most {self.notice_max.days} days ahead", field="start")


@lru_cache(maxsize=4096)
def _build_cached(timezone: str, site: str, venue: str, resource: str, access: str) -> EffectiveRules:
    return EffectiveRules._build(
        timezone, json.loads(site), json.loads(venue), json.loads(resource), json.loads(access)
    )
