"""The booking side's extension points, as one object the composition root builds and passes in.

bms may not import the layers above it, yet two decisions are theirs: the status of a request on
a `rules`-moderated resource, and whether a resident's change of a confirmed booking waits for a
manager. The app factory builds one `BookingPolicies` holding moderation's functions and keeps it
on `app.state.booking_policies`; routes get it through `bms.api.PoliciesDep` and hand it to the
service functions that ask for it. Jobs and tests pass their own (`NO_POLICIES` when they need no
moderation). Nothing is held in a module global, so two apps built in one process never share
policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from bms.context import ResourceCtx
from bms.models import Reservation
from bms.states import Status

if TYPE_CHECKING:
    from bms.service import Draft

__all__ = ["NO_POLICIES", "BookingPolicies", "ChangePolicy", "StatusPolicy"]

# (status, reason) for a request on a `rules` resource, or None to leave it to the next policy.
StatusPolicy = Callable[[Session, "Draft", datetime], "tuple[Status, str] | None"]
# Whether a change of this confirmed booking must wait for a manager.
ChangePolicy = Callable[[Session, ResourceCtx, Reservation], bool]


@dataclass(frozen=True)
class BookingPolicies:
    """Status and change policies, asked in order. Frozen: a built app's policies do not drift."""

    status: Sequence[StatusPolicy] = field(default=())
    change: Sequence[ChangePolicy] = field(default=())

    def __post_init__(self) -> None:
        # Lists are welcome at construction; they are kept as tuples so nobody appends later.
        object.__setattr__(self, "status", tuple(self.status))
        object.__setattr__(self, "change", tuple(self.change))

    def decide_status(self, session: Session, draft: Draft, now: datetime) -> tuple[Status, str] | None:
        """The first policy's answer for a `rules` request; None when none of them decides."""
        for policy in self.status:
            decided = policy(session, draft, now)
            if decided is not None:
                return decided
        return None

    def holds_change(self, session: Session, ctx: ResourceCtx, r: Reservation) -> bool:
        """Whether some policy wants this change of a confirmed booking to wait for a manager."""
        return any(policy(session, ctx, r) for policy in self.change)


NO_POLICIES = BookingPolicies()
