"""Status changes of a reservation and what follows each: access windows, the outbox message, the
audit row. Also the first status of a new request, where the moderation policies plug in."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from access.levels import extra_doors
from access.windows import set_windows
from bms.allocation import place
from bms.context import ResourceCtx, load_resource_by_id
from bms.models import Reservation, ReservationBeneficiary
from bms.policies import BookingPolicies
from bms.states import HOLDING, Status, check_transition
from config.site import Moderation
from core import audit, outbox
from core.db import ident, utcnow

if TYPE_CHECKING:
    from bms.service import Draft

__all__ = [
    "announce_status",
    "check_in_on_entry",
    "confirm",
    "decide_status",
    "event_payload",
    "initial_status",
    "recipients",
    "set_status",
    "sync_access",
    "transition",
]


# Statuses a booking reaches by giving its place back (or never taking it): the waitlist is told.
FREEING = (Status.cancelled.value, Status.rejected.value, Status.expired.value, Status.no_show.value)


def event_payload(r: Reservation, ctx: ResourceCtx) -> dict[str, Any]:
    """The common part of every reservation outbox message."""
    return {
        "reservation_id": r.id,
        "resource": ctx.resource.key,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "status": r.status,
        "planner_id": r.planner_id,
    }


def initial_status(draft: Draft) -> Status:
    """auto: confirmed at once; manual: pending for a manager; rules: pending unless a status policy
    (moderation's conditions) confirms it. Managers' own bookings are confirmed."""
    if draft.privileged or draft.ctx.rules.moderation == Moderation.auto:
        return Status.confirmed
    return Status.pending


def decide_status(
    session: Session, draft: Draft, now: datetime, policies: BookingPolicies
) -> tuple[Status, str | None]:
    """The status a new request is written with, and why (None when there is nothing to say)."""
    status = initial_status(draft)
    if status == Status.pending and draft.ctx.rules.moderation == Moderation.rules:
        decided = policies.decide_status(session, draft, now)
        if decided is not None:
            return decided
    return status, None


def recipients(session: Session, r: Reservation) -> list[int]:
    """Who hears about a reservation: its planner and its beneficiaries."""
    bens = session.exec(
        select(ReservationBeneficiary.user_id).where(col(ReservationBeneficiary.reservation_id) == r.id)
    ).all()
    return sorted({r.planner_id, *bens})


def transition(r: Reservation, target: Status, reason: str | None, now: datetime | None = None) -> str:
    """Move `r` to `target` if the state machine allows it (409 otherwise); return the status it had.
    Nothing is written or announced: `set_status` and `confirm` do that."""
    check_transition(r.status, target)
    before = r.status
    r.status = target.value
    r.status_reason = reason
    r.updated_at = now or utcnow()
    return before


def sync_access(session: Session, r: Reservation, ctx: ResourceCtx, *, new_with: list[int] | None = None) -> None:
    """Tell access who may enter for this booking: its beneficiaries (else its planner) during
    restrict..release while it holds its slot; nobody once it does not.

    `new_with`: `r` was written in this transaction with these beneficiaries, so it has no
    windows, added doors or transitions yet, and nothing is read back."""
    if new_with is not None:
        if r.status in HOLDING:
            set_windows(
                session,
                "reservation",
                ident(r),
                r.resource_id,
                new_with or [r.planner_id],
                r.access_start,
                r.access_end,
                ctx.rules.access.mode.value,
                active=True,
                new_source=True,
            )
        return
    bens = session.exec(
        select(ReservationBeneficiary.user_id).where(col(ReservationBeneficiary.reservation_id) == r.id)
    ).all()
    set_windows(
        session,
        "reservation",
        ident(r),
        r.resource_id,
        list(bens) or [r.planner_id],
        r.access_start,
        r.access_end,
        ctx.rules.access.mode.value,
        active=r.status in HOLDING,
        door_ids=extra_doors(session, "reservation", ident(r)),  # doors a manager added (bms.doors)
    )


def announce_status(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    before: str,
    *,
    action: str | None = None,
    **extra: Any,
) -> None:
    """The access windows, outbox message (to the planner and beneficiaries) and audit row of a status change."""
    sync_access(session, r, ctx)
    if r.status in FREEING:
        from bms.waitlist import place_freed  # a place frees: the waitlist offers it on

        place_freed(session, r, ctx)
    outbox.enqueue(
        session,
        f"reservation.{r.status}",
        {
            **event_payload(r, ctx),
            "venue": ctx.venue.key,
            "reason": r.status_reason,
            "recipients": recipients(session, r),
            "decided_by": actor.label,
            **extra,
        },
    )
    audit.record(
        session,
        actor,
        action or f"reservation.{r.status}",
        "reservation",
        r.id,
        before={"status": before},
        after={"status": r.status, "start": r.start, "end": r.end, "unit_id": r.unit_id},
        reason=r.status_reason,
        **extra,
    )


def set_status(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    target: Status,
    reason: str | None = None,
    now: datetime | None = None,
    *,
    action: str | None = None,
    **extra: Any,
) -> None:
    """The one way a status changes: checked against the state machine, audited, announced."""
    before = transition(r, target, reason, now)
    session.add(r)
    session.flush()
    announce_status(session, actor, r, ctx, before, action=action, **extra)


def confirm(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    reason: str,
    now: datetime,
    *,
    action: str,
    prefer_unit: int | None = None,
    **extra: Any,
) -> None:
    """Confirm a request by placing it as confirmed, so the no-double-booking guarantee applies
    (409 slot_taken if it no longer fits); then announce it like any status change."""
    before = transition(r, Status.confirmed, reason, now)
    place(session, ctx, r, prefer_unit=prefer_unit)
    announce_status(session, actor, r, ctx, before, action=action, **extra)


def check_in_on_entry(session: Session, reservation_id: int, user_id: int, at: datetime, door: str) -> bool:
    """The first granted entry of a beneficiary inside the window checks the booking in.

    Registered with access as the entry listener for reservations (see bookgate.app). The row is
    locked so two entries read on two gateway nodes check it in once."""
    r = session.exec(select(Reservation).where(col(Reservation.id) == reservation_id).with_for_update()).first()
    if r is None or r.status != Status.confirmed.value or not (r.access_start <= at < r.access_end):
        return False
    ctx = load_resource_by_id(session, r.resource_id)
    set_status(
        session,
        audit.SYSTEM,
        r,
        ctx,
        Status.checked_in,
        f"entered at {door}",
        at,
        action="reservation.check_in",
        user_id=user_id,
        door=door,
    )
    return True
