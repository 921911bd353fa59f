"""The reservation state machine, in one place."""

from __future__ import annotations

from enum import StrEnum

from core.errors import Conflict


class Status(StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    rejected = "rejected"
    cancelled = "cancelled"
    checked_in = "checked_in"
    completed = "completed"
    no_show = "no_show"
    expired = "expired"


# Statuses that occupy their slot (and that the database's exclusion constraint covers).
HOLDING = (Status.confirmed, Status.checked_in)
# Statuses that still count as a live booking for quotas and listings.
ACTIVE = (Status.pending, Status.confirmed, Status.checked_in)

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.pending: frozenset({Status.confirmed, Status.rejected, Status.cancelled, Status.expired}),
    Status.confirmed: frozenset({Status.cancelled, Status.checked_in, Status.no_show, Status.completed}),
    Status.checked_in: frozenset({Status.completed}),
    Status.rejected: frozenset(),
    Status.cancelled: frozenset(),
    Status.completed: frozenset(),
    Status.no_show: frozenset(),
    Status.expired: frozenset(),
}


def check_transition(current: str, target: Status) -> None:
    """Raise 409 `illegal_transition` unless `current -> target` is allowed."""
    cur = Status(current)
    if target not in TRANSITIONS[cur]:
        allowed = ", ".join(sorted(TRANSITIONS[cur])) or "none: it is final"
        raise Conflict(
            "illegal_transition",
            f"a {cur.value} reservation cannot become {target.value} (allowed: {allowed})",
            status_from=cur.value,
            status_to=target.value,
        )
