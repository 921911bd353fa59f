"""The pure desired-state function: the single definition of who may enter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from access.desired import Cred, Window, desired_state, may_enter

T0 = datetime(2027, 5, 3, 18, 0, tzinfo=UTC)
H = timedelta(hours=1)
DOORS = {10: [1, 99], 20: [2, 99]}  # resource -> its door and the shared entrance (99)


def test_a_window_grants_each_credential_on_every_door_of_the_resource():
    state = desired_state(
        [Window(7, 10, T0, T0 + H, "badge", "reservation:1")],
        DOORS,
        [Cred(70, 7, "badge", "AB12"), Cred(71, 7, "pin", "1234"), Cred(80, 8, "badge", "CD34")],
    )
    assert {(g.door_id, g.credential_id) for g in state.grants} == {(1, 70), (1, 71), (99, 70), (99, 71)}
    assert all(g.valid_from == T0 and g.valid_until == T0 + H and g.preload and not g.online for g in state.grants)
    assert state.hold_open == ()


def test_overlapping_and_touching_windows_merge_and_keep_their_sources():
    windows = [
        Window(7, 10, T0, T0 + H, "badge", "reservation:1"),
        Window(7, 10, T0 + H, T0 + 2 * H, "badge", "reservation:2"),
        Window(7, 20, T0 + H / 2, T0 + 3 * H, "authorized", "reservation:3"),
    ]
    state = desired_state(windows, DOORS, [Cred(70, 7, "badge", "AB12")])
    entrance = state.grants_for(99)
    assert len(entrance) == 1
    g = entrance[0]
    assert (g.valid_from, g.valid_until) == (T0, T0 + 3 * H)
    assert g.sources == {"reservation:1", "reservation:2", "reservation:3"} and g.online and g.preload
    door1 = state.grants_for(1)
    assert [(x.valid_from, x.valid_until) for x in door1] == [(T0, T0 + 2 * H)]


def test_credential_validity_clips_the_window_and_separate_windows_stay_separate():
    windows = [Window(7, 10, T0, T0 + 2 * H, "badge", "r:1"), Window(7, 10, T0 + 5 * H, T0 + 6 * H, "badge", "r:2")]
    state = desired_state(windows, {10: [1]}, [Cred(70, 7, "badge", "AB12", valid_until=T0 + H)])
    assert [(g.valid_from, g.valid_until) for g in state.grants] == [(T0, T0 + H)]
    state = desired_state(windows, {10: [1]}, [Cred(70, 7, "badge", "AB12")])
    assert len(state.grants) == 2


def test_free_mode_holds_the_door_open_instead_of_granting():
    state = desired_state(
        [Window(7, 10, T0, T0 + H, "free", "r:1"), Window(8, 10, T0 + H / 2, T0 + 2 * H, "free", "r:2")],
        {10: [1]},
        [Cred(70, 7, "badge", "AB12")],
    )
    assert state.grants == ()
    assert [(h.door_id, h.start, h.end) for h in state.hold_open] == [(1, T0, T0 + 2 * H)]


def test_may_enter_is_bounded_by_the_window():
    state = desired_state([Window(7, 10, T0, T0 + H, "authorized", "r:1")], {10: [1]}, [Cred(70, 7, "badge", "AB")])
    assert may_enter(state, 1, 70, T0) and may_enter(state, 1, 70, T0 + H - timedelta(seconds=1))
    assert not may_enter(state, 1, 70, T0 + H) and not may_enter(state, 1, 70, T0 - timedelta(seconds=1))
    assert not may_enter(state, 2, 70, T0) and not may_enter(state, 1, 71, T0)


def test_no_window_no_credential_no_door_means_nothing():
    assert desired_state([], DOORS, []).grants == ()
    assert desired_state([Window(7, 30, T0, T0 + H, "badge", "r:1")], DOORS, [Cred(70, 7, "badge", "AB")]).grants == ()
    assert desired_state([Window(7, 10, T0, T0, "badge", "r:1")], DOORS, [Cred(70, 7, "badge", "AB")]).grants == ()
