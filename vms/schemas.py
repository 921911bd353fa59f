"""What the visitor API takes and gives: bounded inputs, public shapes (never a table model)."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from core.types import IsoDate, IsoDateTime
from vms import tokens

MAX_VISITORS_PER_INVITE = 50
MAX_OCCURRENCES = 52
MAX_SERIES_DAYS = 366
MAX_VISIT_HOURS = 24


def _plain_text(value: str) -> str:
    """Names and notes are shown to people: no control characters (markup is kept and escaped where shown)."""
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value):
        raise ValueError("control or invisible formatting characters are not allowed")
    return value


Text200 = Annotated[str, Field(max_length=200), AfterValidator(_plain_text)]
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]{3,30}")


def _phone(value: str) -> str:
    value = value.strip()
    if not _PHONE.fullmatch(value):
        raise ValueError("a phone number is digits, spaces, dots, dashes and brackets, with an optional leading +")
    return value


class VisitorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_plain_text)]
    email: EmailStr | None = Field(default=None, max_length=254)
    phone: Annotated[str, AfterValidator(_phone)] | None = Field(default=None, max_length=40)
    company: Text200 | None = None
    note: Annotated[str, Field(max_length=500), AfterValidator(_plain_text)] | None = None

    @model_validator(mode="after")
    def _named(self) -> VisitorIn:
        if not self.name:
            raise ValueError("a visitor needs a name")
        return self


class RepeatIn(BaseModel):
    """A weekly rule, always bounded: a number of occurrences or a last date, within a year."""

    model_config = ConfigDict(extra="forbid")
    every_weeks: int = Field(default=1, ge=1, le=4)
    count: int | None = Field(default=None, ge=1, le=MAX_OCCURRENCES)
    until: IsoDate | None = None

    @model_validator(mode="after")
    def _bounded(self) -> RepeatIn:
        if self.count is None and self.until is None:
            raise ValueError("a series needs an end: give count or until")
        return self


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str = Field(min_length=1, max_length=63)
    host_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="staff inviting on someone's behalf")
    visitors: list[VisitorIn] = Field(min_length=1, max_length=MAX_VISITORS_PER_INVITE)
    start: IsoDateTime
    end: IsoDateTime
    purpose: Text200 = ""
    doors: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, max_length=50, description="door keys; default: every door the host may open then"
    )
    repeat: RepeatIn | None = None

    @model_validator(mode="after")
    def _window(self) -> InviteIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if (self.end - self.start).total_seconds() > MAX_VISIT_HOURS * 3600:
            raise ValueError(f"a visit lasts at most {MAX_VISIT_HOURS} hours")
        if self.repeat is not None and len(self.visitors) != 1:
            raise ValueError("a series is for one visitor")
        return self


class WalkInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str = Field(min_length=1, max_length=63)
    host_id: int = Field(ge=1, le=2**31 - 1)
    visitor: VisitorIn
    end: IsoDateTime | None = Field(default=None, description="expected departure; default: in 4 hours")
    purpose: Text200 = ""
    doors: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=50)


class CheckInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=tokens.MAX_LENGTH)
    site: str | None = Field(default=None, max_length=63, description="the desk's site; needed at multi-site desks")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow: bool
    note: Text200 = ""


class BadgeIn(BaseModel):
    """A day badge handed out at the desk: a card serial in hex, valid for the visit only."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=2, max_length=40, pattern=r"^[0-9A-Fa-f:]+$")


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str = Field(min_length=1, max_length=63)
    name: Text200 | None = None
    email: EmailStr | None = Field(default=None, max_length=254)
    phone: Annotated[str, AfterValidator(_phone)] | None = Field(default=None, max_length=40)
    reason: Text200 = ""

    @model_validator(mode="after")
    def _something(self) -> DenyIn:
        if not (self.name or self.email or self.phone):
            raise ValueError("give a name, an e-mail or a phone number")
        return self


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: int = Field(default=90, ge=1, le=3650)
    closing_time: str | None = Field(default=None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    auto_checkout_hours: int | None = Field(default=12, ge=1, le=72)
    release_minutes: int = Field(default=15, ge=0, le=24 * 60)
    margin_minutes: int = Field(default=60, ge=0, le=24 * 60)


class VisitorPublic(BaseModel):
    id: int
    user_id: int
    name: str
    email: str | None
    phone: str | None
    company: str | None


class VisitPublic(BaseModel):
    id: int
    site: str
    host_id: int
    host_name: str
    visitor: VisitorPublic
    start: datetime
    end: datetime
    purpose: str
    doors: list[str]
    status: str
    hold_reason: str | None
    series_id: int | None
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    qr_svg: str
    qr_png: str


class DenyPublic(BaseModel):
    id: int
    site: str
    name: str | None
    email: str | None
    phone: str | None
    reason: str


class RollCallPerson(BaseModel):
    name: str
    kind: str  # visitor, resident, staff
    detail: str
    since: datetime | None


class RollCallGroup(BaseModel):
    entrance: str
    people: list[RollCallPerson]


class RollCall(BaseModel):
    site: str
    at: datetime
    total: int
    groups: list[RollCallGroup]


class PurgeItem(BaseModel):
    visitor_id: int
    user_id: int
    site: str
    last_visit: date | None


class PurgeResult(BaseModel):
    dry_run: bool
    purged: list[PurgeItem]
