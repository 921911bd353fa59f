"""The site configuration file: schema, cross-reference checks and `path: reason` error lists.

Pure data: it knows nothing of the database, nor of the drivers: a controller's `settings` are
checked by the importer (bookgate.provision) through the drivers' registry, with the same paths. The
shell's importer writes what it describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from config.settings import SUPPORTED_LOCALES

KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Key = Annotated[str, Field(pattern=KEY_PATTERN, description="stable lower-case key: a-z, 0-9, -")]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


MAX_NAME = 200


class LocalName(str):
    """A name as a string (the default one, shown where no language matches) with its versions
    per language in `names` (empty when the file gave a plain string)."""

    names: dict[str, str]

    def __new__(cls, default: str, names: dict[str, str] | None = None) -> LocalName:
        obj = super().__new__(cls, default)
        obj.names = dict(names or {})
        return obj


def _local_name(value: Any) -> LocalName:
    """`"Court 1"`, or `{en: "Court 1", fr: "Court n° 1"}`: the first language given is the default."""
    if isinstance(value, LocalName):
        return value
    if isinstance(value, str):
        if not value.strip() or len(value) > MAX_NAME:
            raise ValueError(f"a name is 1 to {MAX_NAME} characters")
        return LocalName(value)
    if not isinstance(value, dict):
        raise ValueError("a name, or a mapping of language to name (e.g. {en: Court 1, fr: Court n° 1})")
    if not value:
        raise ValueError("give at least one language")
    names: dict[str, str] = {}
    for lang, text in value.items():
        if lang not in SUPPORTED_LOCALES:
            raise ValueError(f"unsupported language {lang!r}; use {', '.join(SUPPORTED_LOCALES)}")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NAME:
            raise ValueError(f"{lang}: a name is 1 to {MAX_NAME} characters")
        names[lang] = text
    return LocalName(next(iter(names.values())), names)


Name = Annotated[
    LocalName,
    PlainValidator(_local_name),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                {
                    "type": "object",
                    "propertyNames": {"enum": list(SUPPORTED_LOCALES)},
                    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                    "minProperties": 1,
                },
            ],
            "description": "a name, or one per language (the first is the default)",
        }
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceKind(StrEnum):
    court = "court"
    room = "room"
    parking = "parking"
    equipment = "equipment"


class Moderation(StrEnum):
    auto = "auto"
    manual = "manual"
    rules = "rules"


class AccessMode(StrEnum):
    badge = "badge"
    free = "free"
    authorized = "authorized"
    badge_authorized = "badge+authorized"


class Blackout(Strict):
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _order(self) -> Blackout:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("blackout times need a UTC offset, e.g. 2026-12-24T00:00:00+01:00")
        if self.end <= self.start:
            raise ValueError("blackout end must be after its start")
        return self


def parse_time_range(text: str) -> tuple[time, time]:
    """'07:00-22:00' -> (07:00, 22:00); '00:00-24:00' means the whole day (end = time.max)."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} is not a valid time range")
    start = time(h1, m1)
    end = time.max if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


class Budget(Strict):
    """At most `minutes` of bookings in a resource group over any rolling `days`, per user or household."""

    group: str = Field(min_length=1, max_length=60)
    minutes: int = Field(ge=1)
    days: int = Field(ge=1, le=366)
    per: Literal["user", "unit"] = "unit"


MAX_BOOKING_MINUTES = 31 * 24 * 60


class Rules(Strict):
    """Booking rules. Every field is optional: site defaults < venue < resource, first set wins."""

    slot_minutes: int | None = Field(default=None, ge=5, le=24 * 60)
    min_minutes: int | None = Field(default=None, ge=5)
    max_minutes: int | None = Field(default=None, ge=5, le=MAX_BOOKING_MINUTES)
    buffer_minutes: int | None = Field(default=None, ge=0, le=24 * 60)
    opening_hours: dict[str, list[str]] | None = None
    blackouts: list[Blackout] | None = None
    notice_min_minutes: int | None = Field(default=None, ge=0)
    notice_max_days: int | None = Field(default=None, ge=0, le=3660)
    change_deadline_minutes: int | None = Field(default=None, ge=0)
    max_changes: int | None = Field(default=None, ge=0)
    max_beneficiaries: int | None = Field(default=None, ge=0)
    self_service: bool | None = None
    moderation: Moderation | None = None
    pending_expiry_hours: int | None = Field(default=None, ge=1)
    max_active_per_user: int | None = Field(default=None, ge=1, description="future bookings a user may hold")
    budgets: list[Budget] | None = None
    # messages (notify): reminders before the start, and a follow-up to the planner after a completed booking
    reminder_minutes: list[Annotated[int, Field(ge=5, le=14 * 24 * 60)]] | None = Field(
        default=None, max_length=5, description="reminders, minutes before the start; [] for none (default 1440, 60)"
    )
    follow_up: bool | None = Field(default=None, description="a message to the planner after a completed booking")
    follow_up_minutes: int | None = Field(default=None, ge=0, le=30 * 24 * 60, description="minutes after the end")

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is None:
            return v
        for day, ranges in v.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
            for r in ranges:
                parse_time_range(r)
        return v

    @model_validator(mode="after")
    def _durations(self) -> Rules:
        if self.min_minutes and self.max_minutes and self.min_minutes > self.max_minutes:
            raise ValueError("min_minutes is greater than max_minutes")
        return self


class Restrict(Strict):
    before_start: int | None = Field(default=None, ge=0, le=24 * 60)

    @property
    def offset_minutes(self) -> int:
        """Minutes before the start at which access begins."""
        return self.before_start or 0


class Release(Strict):
    before_end: int | None = Field(default=None, ge=0, le=24 * 60)
    after_end: int | None = Field(default=None, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _one(self) -> Release:
        if self.before_end is not None and self.after_end is not None:
            raise ValueError("give before_end or after_end, not both")
        return self

    @property
    def offset_minutes(self) -> int:
        """Signed minutes after the end at which access ends (negative = before the end)."""
        if self.before_end is not None:
            return -self.before_end
        return self.after_end or 0


class AccessPolicy(Strict):
    mode: AccessMode = AccessMode.badge
    restrict: Restrict | Literal["at_start"] = "at_start"
    release: Release | Literal["at_end"] = "at_end"
    no_show_minutes: int | None = Field(default=None, ge=1, le=24 * 60)


class Pool(Strict):
    units: int = Field(ge=1, le=10_000)
    unit_prefix: str = Field(default="", max_length=20)
    strategy: Literal["fast_filling", "balancing"] = "fast_filling"


class ResourceConfig(Strict):
    key: Key
    name: Name
    kind: ResourceKind
    capacity: int = Field(default=1, ge=1, le=10_000)
    pool: Pool | None = None
    group: str | None = Field(default=None, max_length=60, description="quota group, e.g. courts")
    rules: Rules = Rules()
    access: AccessPolicy = AccessPolicy()

    @model_validator(mode="after")
    def _pool(self) -> ResourceConfig:
        if self.pool and self.capacity != 1:
            raise ValueError("a pool's units each hold one booking: leave capacity at 1")
        return self


class VenueConfig(Strict):
    key: Key
    name: Name
    rules: Rules = Rules()
    resources: list[ResourceConfig] = []


class ControllerConfig(Strict):
    """A door controller. Its `settings` are checked by its driver family (the drivers' registry) when
    the file is imported: this module knows no driver, so it takes a `ControllerCheck`."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    driver: str = Field(pattern=r"^[a-z][a-z0-9_]{0,19}$", description="its kind: esprfid, osdp, ble...")
    settings: dict[str, Any]


ControllerCheck = Callable[[str, dict[str, Any]], list[tuple[str, str]]]
"""(driver, settings) -> what is wrong, as (path within the controller, reason), e.g.
("settings.doorip", "String should match pattern ..."); given by the importer."""


class DoorConfig(Strict):
    key: Key
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["door", "gate", "key_cabinet"] = "door"
    controller: Key
    output: int = Field(default=1, ge=1, le=64, description="door/relay number on the controller")
    slots: int | None = Field(default=None, ge=1, le=500, description="key cabinet slots")
    resources: list[Key] = []
    shared: bool = Field(default=False, description="entrance also used to reach other doors")

    @model_validator(mode="after")
    def _slots(self) -> DoorConfig:
        if (self.kind == "key_cabinet") != (self.slots is not None):
            raise ValueError("slots is required for a key_cabinet and only for it")
        return self


ALWAYS = {day: ["00:00-24:00"] for day in WEEKDAYS}


class AccessLevelConfig(Strict):
    """Standing access: a named set of this site's doors on a weekly schedule (local wall-clock
    ranges; "always" for day and night), closed on `exceptions` (local dates), held by everyone
    with one of `roles` at this site (a default level for residents names `resident`) and by the
    people an admin assigns."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    doors: list[Key] = Field(min_length=1, max_length=500)
    schedule: dict[str, list[str]] | Literal["always"] = "always"
    exceptions: list[date] = Field(default=[], max_length=1000)
    roles: list[Literal["resident", "reception", "venue_manager"]] = []
    mode: Literal["badge", "authorized", "badge+authorized"] = "badge"
    valid_from: date | None = Field(default=None, ge=date(2000, 1, 2), le=date(2099, 12, 30))
    valid_until: date | None = Field(
        default=None, ge=date(2000, 1, 2), le=date(2099, 12, 30), description="the last day it opens"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: dict[str, list[str]] | str) -> dict[str, list[str]] | str:
        if isinstance(v, str):
            return v
        for day, ranges in v.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
            parsed = sorted(parse_time_range(r) for r in ranges)
            for (_a, z), (a, _z) in pairwise(parsed):
                if a < z:
                    raise ValueError(f"{day}: two ranges overlap")
        return v

    @model_validator(mode="after")
    def _validity(self) -> AccessLevelConfig:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self

    @property
    def weekly(self) -> dict[str, list[str]]:
        return dict(ALWAYS) if self.schedule == "always" else dict(self.schedule)


class SiteConfig(Strict):
    key: Key
    name: Name
    timezone: str
    locale: Literal["en", "fr", "de"] = "en"
    defaults: Rules = Rules()
    venues: list[VenueConfig] = []
    controllers: list[ControllerConfig] = []
    doors: list[DoorConfig] = []
    access_levels: list[AccessLevelConfig] = []

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v


class SiteFile(Strict):
    version: Literal[1] = 1
    sites: list[SiteConfig] = Field(min_length=1)


class SiteFileError(Exception):
    """A refused site file; `errors` lists every problem as 'path.to.field: reason'."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts) or "(file)"


def _cross_check(doc: SiteFile) -> list[str]:
    errors: list[str] = []
    seen: dict[str, dict[str, str]] = {k: {} for k in ("site", "venue", "resource", "ctl", "door")}

    def unique(kind: str, key: str, path: str) -> None:
        if key in seen[kind]:
            errors.append(f"{path}.key: duplicate key {key!r} (first at {seen[kind][key]})")
        else:
            seen[kind][key] = path

    for si, site in enumerate(doc.sites):
        sp = f"sites.{si}"
        unique("site", site.key, sp)
        local_resources: set[str] = set()
        for vi, venue in enumerate(site.venues):
            vp = f"{sp}.venues.{vi}"
            unique("venue", venue.key, vp)
            for ri, res in enumerate(venue.resources):
                unique("resource", res.key, f"{vp}.resources.{ri}")
                local_resources.add(res.key)
        controllers = set()
        for ci, ctl in enumerate(site.controllers):
            unique("ctl", ctl.key, f"{sp}.controllers.{ci}")
            controllers.add(ctl.key)
        for di, door in enumerate(site.doors):
            dp = f"{sp}.doors.{di}"
            unique("door", door.key, dp)
            if door.controller not in controllers:
                errors.append(f"{dp}.controller: no controller {door.controller!r} in this site")
            for ri, rk in enumerate(door.resources):
                if rk not in local_resources:
                    errors.append(f"{dp}.resources.{ri}: no resource {rk!r} in this site")
        local_doors = {d.key for d in site.doors}
        levels: set[str] = set()
        for li, level in enumerate(site.access_levels):
            lp = f"{sp}.access_levels.{li}"
            if level.key in levels:
                errors.append(f"{lp}.key: duplicate key {level.key!r} in this site")
            levels.add(level.key)
            for di, dk in enumerate(level.doors):
                if dk not in local_doors:
                    errors.append(f"{lp}.doors.{di}: no door {dk!r} in this site")
    return errors


def controller_errors(data: Any, check: ControllerCheck) -> list[str]:
    """`check` run on every controller of a document (loaded, or a parsed `SiteFile`), as
    'path.to.field: reason'. Controllers whose driver or settings are not even of the right type are
    skipped: the schema reports those."""
    if isinstance(data, SiteFile):
        data = data.model_dump()
    sites = data.get("sites") if isinstance(data, dict) else None
    errors: list[str] = []
    for si, site in enumerate(sites if isinstance(sites, list) else []):
        controllers = site.get("controllers") if isinstance(site, dict) else None
        for ci, ctl in enumerate(controllers if isinstance(controllers, list) else []):
            if not isinstance(ctl, dict) or not isinstance(ctl.get("driver"), str):
                continue
            if not isinstance(ctl.get("settings"), dict):
                continue
            path = f"sites.{si}.controllers.{ci}"
            errors += [f"{path}.{loc}: {msg}" for loc, msg in check(ctl["driver"], ctl["settings"])]
    return errors


# A site file is a few hundred objects; these bounds keep a hostile or mistaken one from costing
# minutes of CPU or a flood of rows. Aliases are expanded when counting, so an "alias bomb" (a few
# lines that expand to billions of values) is refused after MAX_VALUES steps, not walked whole.
MAX_VALUES = 200_000  # mappings, lists and scalars, aliases expanded
MAX_ROWS = 20_000  # sites, venues, resources, pool units, controllers and doors a file may create


def load_yaml(text: str) -> Any:
    """Parse YAML (or JSON) safely, with libyaml's C parser when it is installed (tens of times
    faster than the pure-Python one on large files); SiteFileError names the line of a syntax error."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, C or Python
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SiteFileError([f"(file): not valid YAML{where}"]) from None


def _too_many_values(data: Any) -> bool:
    budget = MAX_VALUES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _rows(doc: SiteFile) -> int:
    rows = 0
    for site in doc.sites:
        rows += 1 + len(site.venues) + len(site.controllers) + len(site.doors) + len(site.access_levels)
        for venue in site.venues:
            rows += sum(1 + (r.pool.units if r.pool else 0) for r in venue.resources)
    return rows


def parse_site_document(data: Any, *, check_controller: ControllerCheck | None = None) -> SiteFile:
    """Validate a loaded document; raise SiteFileError listing every error.

    Without `check_controller` the controllers' settings are not checked: the importer passes the
    drivers' check (bookgate.provision)."""
    if _too_many_values(data):
        raise SiteFileError([f"(file): more than {MAX_VALUES} values (aliases expanded): not a site file"])
    errors: list[str] = []
    doc: SiteFile | None = None
    try:
        doc = SiteFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            errors.append(f"{_loc(err['loc'])}: {msg}")
    if check_controller is not None:
        reported = {e.split(": ", 1)[0] for e in errors}
        errors += [e for e in controller_errors(data, check_controller) if e.split(": ", 1)[0] not in reported]
    if errors or doc is None:
        raise SiteFileError(errors)
    errors = _cross_check(doc)
    if errors:
        raise SiteFileError(errors)
    rows = _rows(doc)
    if rows > MAX_ROWS:
        raise SiteFileError(
            [f"(file): {rows} sites, venues, resources, units, controllers and doors; at most {MAX_ROWS}"]
        )
    return doc


def load_site_file(path: str | Path, *, check_controller: ControllerCheck | None = None) -> SiteFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteFileError([f"(file): cannot read {path}: {exc.strerror}"]) from None
    return parse_site_document(load_yaml(text), check_controller=check_controller)


def example_path(name: str = "residence.yaml") -> Path:
    return Path(__file__).parent / "examples" / name


def merge_rules(*layers: Rules | dict | None) -> Rules:
    """Later layers override earlier ones field by field (site defaults, venue, resource)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        data = layer if isinstance(layer, dict) else layer.model_dump(exclude_none=True)
        merged.update({k: v for k, v in data.items() if v is not None})
    return Rules.model_validate(merged)
