"""Read-only figures for the managers' reports: how long requests waited for a decision.

A decision is the audit trail's `moderation.approve` / `moderation.reject` row of the request
(written in the decision's own transaction), so the lead time is that row's time minus the
request's creation. Requests that lapsed undecided are counted apart: they have no lead time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from statistics import median

from sqlalchemy import String, cast
from sqlmodel import Session, col, select

from bms.booking import ResourceCtx
from bms.models import Reservation
from bms.states import Status
from core.audit import AuditEntry
from core.db import ident

DECISIONS = ("moderation.approve", "moderation.reject")


@dataclass
class LeadTimes:
    resource_key: str
    resource_name: str
    minutes: list[float] = field(default_factory=list)
    approved: int = 0
    rejected: int = 0
    lapsed: int = 0

    @property
    def median_minutes(self) -> float | None:
        return median(self.minutes) if self.minutes else None

    @property
    def longest_minutes(self) -> float | None:
        return max(self.minutes) if self.minutes else None


def lead_times(session: Session, ctxs: list[ResourceCtx], since: datetime, until: datetime) -> list[LeadTimes]:
    """Per resource, the minutes from request to decision of every request decided in the period,
    and how many requests made in the period lapsed undecided. The caller scopes `ctxs` to the
    venues it manages (`bms.stats.managed_venue_resources`)."""
    out = {ident(c.resource): LeadTimes(c.resource.key, c.resource.name) for c in ctxs}
    if not ctxs:
        return []
    rows = session.exec(
        select(AuditEntry.action, AuditEntry.at, Reservation.created_at, Reservation.resource_id)
        .join(Reservation, cast(col(Reservation.id), String) == col(AuditEntry.object_id))
        .where(
            col(AuditEntry.action).in_(DECISIONS),
            col(AuditEntry.object_type) == "reservation",
            col(AuditEntry.at) >= since,
            col(AuditEntry.at) < until,
            col(Reservation.resource_id).in_(sorted(out)),
        )
        .order_by(col(AuditEntry.id))
    ).all()
    for action, at, created, resource_id in rows:
        lt = out[resource_id]
        lt.minutes.append(max(0.0, (at - created).total_seconds() / 60))
        if action == "moderation.approve":
            lt.approved += 1
        else:
            lt.rejected += 1
    lapsed = session.exec(
        select(Reservation.resource_id).where(
            col(Reservation.resource_id).in_(sorted(out)),
            col(Reservation.status) == Status.expired.value,
            col(Reservation.created_at) >= since,
            col(Reservation.created_at) < until,
        )
    ).all()
    for resource_id in lapsed:
        out[resource_id].lapsed += 1
    return [out[ident(c.resource)] for c in ctxs]
