"""Recurring series: RFC 5545 RRULEs expanded in the site's zone.

An occurrence is identified by its local start in the rule (`occurrence_key`), so a weekly
19:00-20:00 stays 19:00-20:00 local across DST. An occurrence changed or cancelled on its
own is `detached`: series edits never touch it again, so it is never resurrected.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import MAXYEAR, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from bms import service
from bms.context import ResourceCtx, can_see, load_resource, load_resource_by_id, manages
from bms.models import Reservation, Series
from bms.policies import NO_POLICIES, BookingPolicies
from bms.states import ACTIVE, Status
from bms.status import set_status
from core import audit
from core.auth import Principal
from core.db import ident, utcnow
from core.errors import AppError, Conflict, Forbidden, Invalid, NotFound
from core.models import User
from core.types import IsoDateTime

MAX_OCCURRENCES = 366
# How far after its first occurrence a series may run (its expansion is bounded by it).
HORIZON = timedelta(days=2 * 366)
ALLOWED_FREQ = ("DAILY", "WEEKLY", "MONTHLY")
KEY_FORMAT = "%Y-%m-%dT%H:%M:%S"


class SeriesCreate(service.ReservationCreate):
    """`start`/`end` are the first occurrence; `rrule` is e.g. FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10."""

    rrule: str = Field(min_length=6, max_length=500)
    conflict: Literal["fail", "skip"] = "fail"


class SeriesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["all", "following"] = "all"
    from_occurrence: str | None = Field(default=None, description="occurrence_key, for scope=following")
    start: IsoDateTime | None = None
    end: IsoDateTime | None = None
    rrule: str | None = Field(default=None, min_length=6, max_length=500)
    note: str | None = Field(default=None, max_length=1000)
    conflict: Literal["fail", "skip"] = "fail"


class SeriesCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["all", "following"] = "all"
    from_occurrence: str | None = None
    reason: str = Field(min_length=1, max_length=500)


class OccurrenceResult(BaseModel):
    occurrence: str
    reservation_id: int | None = None
    code: str | None = None
    message: str | None = None


class SeriesResult(BaseModel):
    series_id: int
    rrule: str
    timezone: str
    booked: list[OccurrenceResult]
    skipped: list[OccurrenceResult]
    cancelled: list[OccurrenceResult] = []


def _calendar(year: int) -> tuple[int, bool]:
    return date(year, 1, 1).weekday(), calendar.isleap(year)


def _twin_offset(first: int, last: int) -> int:
    """Years to add to `first..last` so they land on years with the very same calendars (weekday of
    1 January and leap year, for them and their neighbours: ISO weeks too), as close before
    `MAXYEAR` as possible.

    dateutil walks a rule period by period and, when no candidate comes any more (e.g.
    FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30), only stops at year 9999: seconds of CPU. Expanded on
    these twin years, the walk meets `MAXYEAR` a few years after the horizon, whatever the rule.
    """
    span = range(first - 1, last + 2)
    want = [_calendar(y) for y in span]
    for offset in range(MAXYEAR - 1 - span[-1], 0, -1):
        if all(_calendar(y + offset) == w for y, w in zip(span, want, strict=True)):
            return offset
    return 0  # not reached: the Gregorian calendar repeats every 400 years


def expand(
    rule: str, dtstart_local: datetime, until_local: datetime | None = None, *, horizon: timedelta = HORIZON
) -> list[datetime]:
    """Local naive starts of the rule, in a bounded time whatever the rule says.

    422: a rule that does not parse (`bad_rrule`), has more than `MAX_OCCURRENCES` occurrences
    (`too_many_occurrences`), runs past `horizon` after its first occurrence (`rrule_too_long`)
    or has no occurrence at all (`rrule_empty`)."""
    text = rule.strip().removeprefix("RRULE:")
    parts = dict(p.split("=", 1) for p in text.upper().split(";") if "=" in p)
    if parts.get("FREQ") not in ALLOWED_FREQ:
        raise Invalid("bad_rrule", f"FREQ must be one of {', '.join(ALLOWED_FREQ)}", field="rrule")
    if "DTSTART" in text.upper():
        raise Invalid("bad_rrule", "give the first occurrence in start/end, not DTSTART", field="rrule")
    if "BYEASTER" in parts:
        raise Invalid("bad_rrule", "BYEASTER is not part of RFC 5545", field="rrule")
    if dtstart_local.year < 1900:
        raise Invalid("bad_rrule", "the first occurrence is too far in the past", field="start")
    end = dtstart_local + horizon
    if end.year >= MAXYEAR - 2:
        raise Invalid("bad_rrule", "the first occurrence is too far ahead", field="rrule")
    offset = _twin_offset(dtstart_local.year, end.year)
    try:
        parsed = rrulestr(text, dtstart=dtstart_local)
        if not isinstance(parsed, rrule):
            raise ValueError("one RRULE only")
        own_until: datetime | None = vars(parsed).get("_until")  # dateutil keeps UNTIL only there
        twin_until = None
        if own_until is not None and own_until <= end:
            twin_until = own_until.replace(year=own_until.year + offset)
        twin = parsed.replace(dtstart=dtstart_local.replace(year=dtstart_local.year + offset), until=twin_until)
        occurrences: list[datetime] = []
        beyond = False
        twin_end = end.replace(year=end.year + offset)
        for o in twin:
            if o > twin_end:  # past the twin years: compared there, never mapped back
                beyond = True
                break
            occurrences.append(o.replace(year=o.year - offset))
            if len(occurrences) > MAX_OCCURRENCES:
                break
    except (ValueError, TypeError) as exc:
        raise Invalid("bad_rrule", f"the RRULE does not parse: {exc}", field="rrule") from None
    if len(occurrences) > MAX_OCCURRENCES:
        raise Invalid(
            "too_many_occurrences",
            f"at most {MAX_OCCURRENCES} occurrences: add COUNT or UNTIL",
            field="rrule",
            limit=MAX_OCCURRENCES,
        )
    if beyond:
        raise Invalid(
            "rrule_too_long",
            f"a series spans at most {horizon.days} days: add COUNT or UNTIL",
            field="rrule",
            limit_days=horizon.days,
        )
    if until_local is not None:
        occurrences = [o for o in occurrences if o < until_local]
    if not occurrences and until_local is None:
        raise Invalid("rrule_empty", f"the rule has no occurrence within {horizon.days} days", field="rrule")
    return occurrences


@dataclass(frozen=True)
class Expanded:
    """A rule expanded for a first occurrence in a zone (local naive starts)."""

    timezone: str
    dtstart_local: datetime
    starts: list[datetime]


def preflight(session: Session, principal: Principal, data: SeriesCreate) -> Expanded | None:
    """Expand a new series' rule on a read session, before the write transaction is taken, so a
    rule that is refused (422) never holds the writers up. None when the resource is not one the
    caller sees: the service refuses it, with nothing said about the rule first."""
    ctx = _load_ctx(session, data.resource)
    if ctx is None or not can_see(principal, ctx):
        return None
    local_start = data.start.astimezone(ctx.rules.tz).replace(tzinfo=None)
    return Expanded(ctx.site.timezone, local_start, expand(data.rrule, local_start))


def _load_ctx(session: Session, key: str) -> ResourceCtx | None:
    try:
        return load_resource(session, key)
    except NotFound:
        return None


def localize(naive: datetime, tz: ZoneInfo) -> datetime | None:
    """Aware local time, or None when the wall time does not exist (the spring gap)."""
    aware = naive.replace(tzinfo=tz)
    back = aware.astimezone(ZoneInfo("UTC")).astimezone(tz).replace(tzinfo=None)
    return aware if back == naive else None


def _occurrence_times(series: Series, naive_start: datetime) -> tuple[datetime, datetime] | None:
    tz = ZoneInfo(series.timezone)
    start = localize(naive_start, tz)
    end = localize(naive_start + timedelta(minutes=series.duration_minutes), tz)
    if start is None or end is None:
        return None
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def _series_occurrences(series: Series) -> list[datetime]:
    until = datetime.strptime(series.until_local, KEY_FORMAT) if series.until_local else None  # noqa: DTZ007 - local wall time
    return expand(series.rrule, datetime.strptime(series.dtstart_local, KEY_FORMAT), until)  # noqa: DTZ007


def _book_occurrences(
    session: Session,
    principal: Principal,
    series: Series,
    ctx: ResourceCtx,
    naive_starts: list[datetime],
    now: datetime,
    conflict: str,
    result: SeriesResult,
    policies: BookingPolicies,
) -> None:
    planner = session.get(User, series.planner_id)
    if planner is None:  # the planner's account was deleted: nothing can be booked in their name
        raise NotFound("user_not_found", "the series' planner no longer exists")
    for naive in naive_starts:
        key = naive.strftime(KEY_FORMAT)
        times = _occurrence_times(series, naive)
        if times is None:
            result.skipped.append(
                OccurrenceResult(
                    occurrence=key, code="nonexistent_local_time", message="this local time does not exist (DST change)"
                )
            )
            continue
        if times[0] <= now:
            continue
        draft = service.Draft(
            ctx,
            planner,
            times[0],
            times[1],
            list(series.beneficiary_ids),
            series.places,
            series.note,
            manages(principal, ctx),
        )
        try:
            with session.begin_nested():
                ctx.rules.check_times(draft.start, draft.end, now, privileged=draft.privileged)
                r = service.insert(
                    session, principal, draft, now, policies=policies, series_id=series.id, occurrence_key=key
                )
            result.booked.append(OccurrenceResult(occurrence=key, reservation_id=r.id))
        except AppError as exc:
            result.skipped.append(OccurrenceResult(occurrence=key, code=exc.code, message=exc.message))
    if conflict == "fail" and result.skipped:
        raise Conflict(
            "series_conflict",
            f"{len(result.skipped)} occurrence(s) cannot be booked; nothing was",
            occurrences=[s.model_dump() for s in result.skipped],
        )


def create_series(
    session: Session,
    principal: Principal,
    data: SeriesCreate,
    now: datetime | None = None,
    *,
    policies: BookingPolicies = NO_POLICIES,
    expanded: Expanded | None = None,
) -> SeriesResult:
    """Book every occurrence. `expanded` is the rule as `preflight` expanded it before the write
    transaction began; it is expanded again here only if the resource's zone says otherwise."""
    now = now or utcnow()
    draft = service.prepare(session, principal, data, now)
    ctx = draft.ctx
    tz = ctx.rules.tz
    local_start = draft.start.astimezone(tz).replace(tzinfo=None)
    local_end = draft.end.astimezone(tz).replace(tzinfo=None)
    if expanded is None or expanded.timezone != ctx.site.timezone or expanded.dtstart_local != local_start:
        expanded = Expanded(ctx.site.timezone, local_start, expand(data.rrule, local_start))
    starts = expanded.starts
    series = Series(
        resource_id=ident(ctx.resource),
        planner_id=principal.user_id,
        rrule=data.rrule.strip().removeprefix("RRULE:"),
        dtstart_local=local_start.strftime(KEY_FORMAT),
        duration_minutes=int((local_end - local_start).total_seconds() // 60),
        timezone=ctx.site.timezone,
        places=data.places,
        beneficiary_ids=draft.beneficiaries,
        note=data.note,
    )
    session.add(series)
    session.flush()
    result = SeriesResult(series_id=series.id, rrule=series.rrule, timezone=series.timezone, booked=[], skipped=[])
    _book_occurrences(session, principal, series, ctx, starts, now, data.conflict, result, policies)
    audit.record(
        session,
        principal.actor,
        "series.create",
        "series",
        series.id,
        after={
            "rrule": series.rrule,
            "dtstart_local": series.dtstart_local,
            "booked": len(result.booked),
            "skipped": len(result.skipped),
        },
    )
    return result


def _load(session: Session, principal: Principal, series_id: int) -> tuple[Series, ResourceCtx, bool]:
    series = session.get(Series, series_id)
    if series is None:
        raise NotFound("series_not_found", f"no series {series_id}")
    ctx = load_resource_by_id(session, series.resource_id)
    privileged = manages(principal, ctx)
    if series.planner_id != principal.user_id and not privileged:
        raise NotFound("series_not_found", f"no series {series_id}")
    return series, ctx, privileged


def _future_linked(session: Session, series: Series, from_key: str | None, now: datetime) -> list[Reservation]:
    stmt = select(Reservation).where(
        col(Reservation.series_id) == series.id,
        col(Reservation.start) > now,
    )
    if from_key:
        stmt = stmt.where(col(Reservation.occurrence_key) >= from_key)
    return list(session.exec(stmt.order_by(col(Reservation.start))).all())


def get_series(session: Session, principal: Principal, series_id: int) -> tuple[Series, list[Reservation]]:
    series, _ctx, _p = _load(session, principal, series_id)
    rows = session.exec(
        select(Reservation).where(col(Reservation.series_id) == series.id).order_by(col(Reservation.start))
    ).all()
    return series, list(rows)


def update_series(
    session: Session,
    principal: Principal,
    series_id: int,
    data: SeriesUpdate,
    now: datetime | None = None,
    *,
    policies: BookingPolicies = NO_POLICIES,
) -> SeriesResult:
    """Edit every future occurrence, or this-and-following (the series is split in two).
    Detached occurrences keep their own times and status."""
    now = now or utcnow()
    series, ctx, privileged = _load(session, principal, series_id)
    if not series.active:
        raise Conflict("series_inactive", "this series was cancelled")
    from_key = data.from_occurrence
    if data.scope == "following":
        if not from_key:
            raise Invalid("missing_occurrence", "scope=following needs from_occurrence", field="from_occurrence")
        _parse_key(from_key)
    tz = ctx.rules.tz
    target = series
    if not (ctx.resource.active and (privileged or series.planner_id == principal.user_id)):
        raise Forbidden("not_the_planner", "only the planner or a manager may edit this series")
    if data.scope == "following":
        # Split: the old series stops before from_key; a new one carries the edit from there.
        target = Series(**series.model_dump(exclude={"id", "created_at", "until_local"}))
        target.dtstart_local = from_key  # type: ignore[assignment]
        before = [o for o in _series_occurrences(series) if o.strftime(KEY_FORMAT) < from_key]  # type: ignore[operator]
        target.rrule = _reduce_count(series.rrule, len(before))
        series.until_local = from_key
        session.add(series)
    if data.start is not None or data.end is not None:
        if data.start is None or data.end is None:
            raise Invalid("start_and_end", "give both start and end", field="start")
        ls = data.start.astimezone(tz).replace(tzinfo=None)
        le = data.end.astimezone(tz).replace(tzinfo=None)
        if le <= ls:
            raise Invalid("invalid_range", "the end must be after the start", field="end")
        target.dtstart_local = ls.strftime(KEY_FORMAT)
        target.duration_minutes = int((le - ls).total_seconds() // 60)
    if data.rrule is not None:
        target.rrule = data.rrule.strip().removeprefix("RRULE:")
    if data.note is not None:
        target.note = data.note
    session.add(target)
    session.flush()
    result = SeriesResult(series_id=target.id, rrule=target.rrule, timezone=target.timezone, booked=[], skipped=[])
    wanted: dict[date, datetime] = {}
    for naive in _series_occurrences(target):
        wanted.setdefault(naive.date(), naive)
    existing = _future_linked(session, series, from_key if data.scope == "following" else None, now)
    planner = session.get(User, series.planner_id)
    blocked: set[date] = set()
    movable: list[Reservation] = []
    for r in existing:
        if r.detached or r.status not in [s.value for s in ACTIVE]:
            # Changed or cancelled on its own, or over: its date stays as it is.
            blocked.add(_parse_key(r.occurrence_key or "").date())
            if r.detached and r.series_id != target.id:
                r.series_id = target.id
                session.add(r)
        else:
            movable.append(r)
    for r in movable:
        day = _parse_key(r.occurrence_key or "").date()
        wanted_start = None if day in blocked else wanted.pop(day, None)
        times = _occurrence_times(target, wanted_start) if wanted_start is not None else None
        if wanted_start is None or times is None:
            set_status(session, principal.actor, r, ctx, Status.cancelled, "series edited", now)
            result.cancelled.append(OccurrenceResult(occurrence=r.occurrence_key or "", reservation_id=r.id))
            continue
        key = wanted_start.strftime(KEY_FORMAT)
        try:
            with session.begin_nested():
                service.move(session, ctx, r, times[0], times[1], planner, now, privileged=manages(principal, ctx))  # type: ignore[arg-type]
                r.occurrence_key, r.series_id = key, target.id
                session.add(r)
                session.flush()
            result.booked.append(OccurrenceResult(occurrence=key, reservation_id=r.id))
        except AppError as exc:
            result.skipped.append(OccurrenceResult(occurrence=key, code=exc.code, message=exc.message))
            if data.conflict == "skip":
                session.refresh(r)
                set_status(session, principal.actor, r, ctx, Status.cancelled, "series edited", now)
                result.cancelled.append(OccurrenceResult(occurrence=r.occurrence_key or "", reservation_id=r.id))
    fresh = [naive for day, naive in sorted(wanted.items()) if day not in blocked]
    _book_occurrences(session, principal, target, ctx, fresh, now, data.conflict, result, policies)
    audit.record(
        session,
        principal.actor,
        "series.update",
        "series",
        target.id,
        after={
            "scope": data.scope,
            "rrule": target.rrule,
            "dtstart_local": target.dtstart_local,
            "booked": len(result.booked),
            "skipped": len(result.skipped),
        },
        split_from=series.id if target is not series else None,
    )
    return result


def cancel_series(
    session: Session,
    principal: Principal,
    series_id: int,
    data: SeriesCancel,
    now: datetime | None = None,
) -> SeriesResult:
    now = now or utcnow()
    series, ctx, privileged = _load(session, principal, series_id)
    if data.scope == "following" and not data.from_occurrence:
        raise Invalid("missing_occurrence", "scope=following needs from_occurrence", field="from_occurrence")
    if not privileged and series.planner_id != principal.user_id:
        raise Forbidden("not_the_planner", "only the planner or a manager may cancel this series")
    result = SeriesResult(series_id=series.id, rrule=series.rrule, timezone=series.timezone, booked=[], skipped=[])
    from_key = data.from_occurrence if data.scope == "following" else None
    for r in _future_linked(session, series, from_key, now):
        if r.status in (Status.pending, Status.confirmed):
            set_status(session, principal.actor, r, ctx, Status.cancelled, data.reason, now)
            result.cancelled.append(OccurrenceResult(occurrence=r.occurrence_key or "", reservation_id=r.id))
    if data.scope == "all":
        series.active = False
    else:
        series.until_local = from_key
    session.add(series)
    audit.record(
        session,
        principal.actor,
        "series.cancel",
        "series",
        series.id,
        after={"scope": data.scope, "from": from_key, "cancelled": len(result.cancelled)},
    )
    return result


def _reduce_count(rule: str, used: int) -> str:
    """The rest of a COUNT-limited rule once `used` occurrences stay with the first half."""
    parts = []
    for part in rule.split(";"):
        name, _, value = part.partition("=")
        if name.upper() == "COUNT" and value.isdigit():
            part = f"COUNT={max(1, int(value) - used)}"
        parts.append(part)
    return ";".join(parts)


def _parse_key(key: str) -> datetime:
    try:
        return datetime.strptime(key, KEY_FORMAT)  # noqa: DTZ007 - local wall time
    except ValueError:
        raise Invalid(
            "bad_occurrence", "from_occurrence is an occurrence_key like 2026-12-01T19:00:00", field="from_occurrence"
        ) from None
