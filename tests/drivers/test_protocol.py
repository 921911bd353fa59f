"""The gateway/driver contract refuses ambiguous times and nonsense commands at construction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from access.protocol import (
    Availability,
    CommandResult,
    ControllerDriver,
    DoorEvent,
    FullSync,
    Grant,
    Revoke,
    Unlock,
    UserList,
)
from drivers.esprfid import EsprfidDriver, MqttSettings

START = datetime(2030, 1, 1, 9, tzinfo=UTC)


def test_grant_normalises_to_utc_and_refuses_naive_datetimes():
    paris = timezone(timedelta(hours=1))
    grant = Grant("c", 1, "uid", "Ann", datetime(2030, 1, 1, 10, tzinfo=paris), datetime(2030, 1, 1, 12, tzinfo=paris))
    assert grant.valid_from == START and grant.valid_from.tzinfo is UTC
    with pytest.raises(ValueError, match="aware"):
        Grant("c", 1, "uid", "Ann", datetime(2030, 1, 1, 9), START + timedelta(hours=1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="after"):
        Grant("c", 1, "uid", "Ann", START, START)
    with pytest.raises(ValueError):
        Grant("", 1, "uid", "Ann", START, START + timedelta(hours=1))
    with pytest.raises(ValueError):
        Revoke("c", 0, "uid")
    with pytest.raises(ValueError):
        Unlock("c", 1, seconds=0)
    with pytest.raises(ValueError):
        Availability("k", True, datetime(2030, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="kind"):
        DoorEvent("k", "opened", None, 1, START)  # type: ignore[arg-type]


def test_full_sync_and_user_list_are_immutable_values():
    grants = [Grant("c", 1, "u1", "A", START, START + timedelta(hours=1))]
    sync = FullSync("s", grants)
    grants.clear()
    assert len(sync.grants) == 1 and isinstance(sync.grants, tuple)
    assert UserList("k", {"a", "b"}).uids == frozenset({"a", "b"})
    assert CommandResult("c", True).attempts == 0


def test_esprfid_driver_satisfies_the_protocol():
    assert isinstance(EsprfidDriver(MqttSettings.from_url("mqtt://127.0.0.1")), ControllerDriver)
