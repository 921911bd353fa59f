"""The booking side's public service API, for the layers above bms (moderation, portal, jobs).

Import bms's behaviour from here, and its tables and states from `bms.models` and `bms.states`;
everything else in bms may change shape without notice. Each name keeps the transaction rules of
bms: it works in the caller's session and flushes, never commits.

Reading
  `ReservationPublic`, `public`, `public_many` (a list in a constant number of queries),
  `ResourceCtx` (a resource with its venue, site, units and effective rules), `load_resource`,
  `load_resource_by_id`, `visible_resource`, and who may do what: `manages`, `can_see`.
Deciding
  `fits` (would this booking find a place now), `has_room` (is there room for these times),
  `recipients` (who hears about a booking).
Writing
  `confirm` (place a request as confirmed: the no-double-booking guarantee applies), `set_status`
  (any other status change, checked, audited and announced), `set_times` then `confirm` to confirm
  on other times, `apply_change` (move a confirmed booking to new times).
Extending
  `BookingPolicies` and the `StatusPolicy` / `ChangePolicy` signatures; a status policy is given a
  `Draft`. `EffectiveRules` builds opening hours and other rule sets for a policy's own checks.
"""

from __future__ import annotations

from bms.allocation import fits, has_room
from bms.context import ResourceCtx, can_see, load_resource, load_resource_by_id, manages, visible_resource
from bms.policies import NO_POLICIES, BookingPolicies, ChangePolicy, StatusPolicy
from bms.queries import ReservationPublic, public, public_many
from bms.rules import EffectiveRules
from bms.service import Draft, apply_change, set_times
from bms.status import confirm, recipients, set_status

__all__ = [
    "NO_POLICIES",
    "BookingPolicies",
    "ChangePolicy",
    "Draft",
    "EffectiveRules",
    "ReservationPublic",
    "ResourceCtx",
    "StatusPolicy",
    "apply_change",
    "can_see",
    "confirm",
    "fits",
    "has_room",
    "load_resource",
    "load_resource_by_id",
    "manages",
    "public",
    "public_many",
    "recipients",
    "set_status",
    "set_times",
    "visible_resource",
]
