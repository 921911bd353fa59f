"""The signed checkpoint follows the trail by itself: every commit that appended audit rows is
sealed shortly after, without `bookgate audit verify`, and a trail cut or rewritten below the
sealed head is named by verify (and makes the keeper stop advancing)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from core import audit
from core.audit import SYSTEM, AuditEntry
from core.db import is_sqlite, read_session, write_session
from tests.conftest import new_password


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _append(engine, n: int, tag: str = "thing") -> None:
    with write_session(engine) as s:
        for i in range(n):
            audit.record(s, SYSTEM, f"test.{tag}", tag, i, after={"n": i})


def _head(engine) -> tuple[int, int]:
    with read_session(engine) as s:
        count, last = s.exec(select(func.count(), func.max(AuditEntry.id))).one()  # type: ignore[arg-type]
    return int(count), int(last or 0)


def _sealed(path) -> audit.Checkpoint | None:
    try:
        return audit.read_checkpoint(path)
    except audit.CheckpointError:
        return None


def _raw(engine, sql: str) -> None:
    """What someone holding the database can do: drop the guards and write."""
    with engine.begin() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute(text(sql))
        if not is_sqlite(engine):
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER USER")


@pytest.fixture
def keeper(engine, tmp_path):
    k = audit.CheckpointKeeper(engine, tmp_path / "var" / audit.CHECKPOINT_FILE, min_interval=0.05, idle_poll=30)
    k.start()
    yield k
    k.stop()


def test_a_request_that_writes_moves_the_checkpoint_without_verify(client, admin_headers, engine, tmp_path):
    path = tmp_path / "keeper" / audit.CHECKPOINT_FILE
    keeper = audit.CheckpointKeeper(engine, path, min_interval=0.05, idle_poll=30)
    keeper.start()
    try:
        assert wait_until(
            lambda: _sealed(path) is not None and _sealed(path) == audit.Checkpoint(*_head(engine), _last_hash(engine))
        )
        before = _sealed(path)
        r = client.post(
            "/api/v1/users",
            json={"email": "new-resident@example.com", "name": "New", "password": new_password()},
            headers=admin_headers,
        )
        assert r.status_code == 201, r.text
        rows, last_id = _head(engine)
        assert before is not None and last_id > before.last_id  # the request appended rows
        # sealed by the commit's own wake-up: the idle poll (30 s) never fires in this test
        assert wait_until(lambda: (cp := _sealed(path)) is not None and cp.last_id == last_id, timeout=5)
        sealed = _sealed(path)
        assert sealed == audit.Checkpoint(rows, last_id, _last_hash(engine))
        with read_session(engine) as s:
            assert audit.verify(s, checkpoint=sealed).ok
    finally:
        keeper.stop()


def _last_hash(engine) -> str:
    with read_session(engine) as s:
        return s.exec(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).one()  # type: ignore[union-attr]


def test_rows_cut_after_sealing_are_named_truncated(engine, keeper):
    _append(engine, 5)
    rows, last_id = _head(engine)
    assert wait_until(lambda: (cp := _sealed(keeper.path)) is not None and cp.last_id == last_id)
    sealed = _sealed(keeper.path)
    assert sealed is not None and sealed.rows == rows
    _raw(engine, f"DELETE FROM audit_log WHERE id > {last_id - 2}")
    with read_session(engine) as s:
        assert audit.verify(s).ok  # the chain alone still links
        result = audit.verify(s, checkpoint=sealed)
    assert not result.ok and result.problem == "truncated" and result.checked == rows - 2
    assert keeper.advance() is None  # the keeper sees the sealed row gone
    assert isinstance(keeper.problem, audit.ChainError) and keeper.problem.problem == "truncated"
    # new rows chained onto the shortened trail neither hide the cut nor move the checkpoint
    # (on SQLite they may even take the ids of the rows cut: then the sealed row reads as replaced)
    _append(engine, 3, tag="after-cut")
    assert not wait_until(lambda: _sealed(keeper.path) != sealed, timeout=0.5)
    assert keeper.problem is not None and keeper.problem.problem in ("truncated", "rewritten")
    with read_session(engine) as s:
        again = audit.verify(s, checkpoint=sealed)
    assert not again.ok and again.problem in ("truncated", "rewritten")


def test_a_sealed_row_rewritten_is_named_rewritten(engine, keeper):
    _append(engine, 4)
    _, last_id = _head(engine)
    assert wait_until(lambda: (cp := _sealed(keeper.path)) is not None and cp.last_id == last_id)
    sealed = _sealed(keeper.path)
    _raw(engine, f"UPDATE audit_log SET object_id = '99' WHERE id = {last_id - 1}")
    with read_session(engine) as s:
        result = audit.verify(s, checkpoint=sealed)
    assert not result.ok and result.problem == "rewritten" and result.first_bad_id == last_id - 1
    # the sealed head itself rewritten: the keeper sees it at its next step
    _raw(engine, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {last_id}")
    assert keeper.advance() is None
    assert isinstance(keeper.problem, audit.ChainError) and keeper.problem.problem == "rewritten"
    assert _sealed(keeper.path) == sealed


def test_many_commits_are_sealed_in_few_writes(engine, tmp_path, monkeypatch):
    writes: list[int] = []
    real = audit.write_checkpoint

    def counting(path, cp, key=None):  # type: ignore[no-untyped-def]
        writes.append(cp.last_id)
        real(path, cp, key)

    monkeypatch.setattr(audit, "write_checkpoint", counting)
    keeper = audit.CheckpointKeeper(engine, tmp_path / audit.CHECKPOINT_FILE, min_interval=0.3, idle_poll=30)
    keeper.start()
    try:
        started = time.monotonic()
        for i in range(30):
            _append(engine, 1, tag=f"c{i}")
        _, last_id = _head(engine)
        assert wait_until(lambda: bool(writes) and writes[-1] == last_id)
        elapsed = time.monotonic() - started
    finally:
        keeper.stop()
    assert writes == sorted(writes)  # never backwards
    assert len(writes) <= 2 + elapsed / 0.3, (len(writes), elapsed)


def test_a_rolled_back_append_leaves_nothing_to_seal(engine, keeper):
    _append(engine, 2)
    _, last_id = _head(engine)
    assert wait_until(lambda: (cp := _sealed(keeper.path)) is not None and cp.last_id == last_id)
    with pytest.raises(RuntimeError):
        with write_session(engine) as s:
            audit.record(s, SYSTEM, "test.rolled_back", "thing", 1)
            raise RuntimeError("refused")
    assert _head(engine)[1] == last_id
    assert keeper.advance() == _sealed(keeper.path) and keeper.problem is None


def test_a_full_walk_never_moves_the_checkpoint_back(engine, keeper):
    """What `bookgate audit verify` writes after its walk: the head it saw, unless the server's
    keeper has sealed more meanwhile."""
    _append(engine, 3)
    with read_session(engine) as s:
        walked = audit.verify(s)
    assert walked.ok and walked.head is not None
    _append(engine, 2)  # appended while the walk was going on
    _, last_id = _head(engine)
    assert wait_until(lambda: (cp := _sealed(keeper.path)) is not None and cp.last_id == last_id)
    kept = audit.store_checkpoint(keeper.path, walked.head)
    assert kept.last_id == last_id and _sealed(keeper.path) == kept
    # on a path no keeper has written yet, the walk's head is stored
    fresh = keeper.path.with_name("other-checkpoint")
    assert audit.store_checkpoint(fresh, walked.head) == walked.head == _sealed(fresh)
