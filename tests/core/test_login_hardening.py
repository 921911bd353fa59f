"""Sign-in under attack: the password check never holds the writer lock, failures are throttled per
(account, address) before the account's ceiling, and concurrent guesses are all counted."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from core import auth
from core.audit import AuditEntry
from core.db import read_session, write_session
from core.errors import AppError
from core.models import LoginAttempt


class SlowHashing:
    """A stand-in for Argon2id at a deliberately high cost: every verification takes `seconds`."""

    def __init__(self, seconds: float, answer: bool = False) -> None:
        self.seconds, self.answer = seconds, answer
        self.started = threading.Event()

    def verify(self, password_hash: str | None, password: str) -> bool:
        self.started.set()
        time.sleep(self.seconds)
        return self.answer

    def needs_rehash(self, password_hash: str) -> bool:
        return False

    def hash(self, password: str) -> str:
        return "unused"


def _status(engine, settings, email: str, password: str, addr: str) -> int:
    try:
        auth.login(engine, settings, email, password, addr)
    except AppError as exc:
        return exc.status
    return 200


def test_a_slow_password_check_does_not_hold_up_other_writes(engine, settings, monkeypatch):
    slow = SlowHashing(seconds=1.5)
    monkeypatch.setattr(auth, "hashing_for", lambda _settings: slow)
    with ThreadPoolExecutor(max_workers=4) as pool:
        guesses = [
            pool.submit(_status, engine, settings, f"victim{i}@example.com", "wrong-password", f"10.0.0.{i}")
            for i in range(4)
        ]
        assert slow.started.wait(10), "no verification started"
        began = time.monotonic()
        with write_session(engine) as s:  # any other write: it must not queue behind the hashing
            s.add(LoginAttempt(email="bystander@example.com", client_addr="192.0.2.1"))
        waited = time.monotonic() - began
        assert [g.result() for g in guesses] == [401] * 4
    assert waited < 0.75, f"a write waited {waited:.2f} s behind password checks"


def test_concurrent_guesses_are_all_counted(engine, settings, monkeypatch):
    """The attempt is counted before the (slow) check: parallel guesses cannot all slip under the limit."""
    monkeypatch.setattr(auth, "hashing_for", lambda _settings: SlowHashing(seconds=0.3))
    n = settings.login_max_failures_per_account_address + 5
    with ThreadPoolExecutor(max_workers=n) as pool:
        statuses = list(
            pool.map(lambda _: _status(engine, settings, "target@example.com", "guess-guess", "203.0.113.9"), range(n))
        )
    assert statuses.count(401) == settings.login_max_failures_per_account_address
    assert statuses.count(429) == 5


def test_failures_from_one_address_do_not_lock_the_owner_out_elsewhere(engine, settings, make_user):
    user, password = make_user()
    for _ in range(settings.login_max_failures_per_account_address):
        assert _status(engine, settings, user.email, "wrong-password", "198.51.100.7") == 401
    # the guessing address is throttled, even with the right password...
    assert _status(engine, settings, user.email, password, "198.51.100.7") == 429
    # ...the owner, from their own address, is not
    assert _status(engine, settings, user.email, password, "192.0.2.10") == 200
    with read_session(engine) as s:
        throttled = s.exec(select(AuditEntry).where(AuditEntry.action == "auth.login_throttled")).all()
    assert len(throttled) == 1 and throttled[0].client_addr == "198.51.100.7"


def test_the_account_ceiling_holds_across_addresses(engine, settings, make_user):
    tight = settings.model_copy(update={"login_max_failures_per_account": 8})
    user, password = make_user()
    for i in range(8):  # two guesses from each of four addresses: under the per-pair limit
        assert _status(engine, tight, user.email, "wrong-password", f"198.51.100.{i // 2}") == 401
    assert _status(engine, tight, user.email, password, "192.0.2.10") == 429
    assert _status(engine, tight, "someone-else@example.com", "wrong-password", "192.0.2.10") == 401


def test_success_clears_only_its_own_address(engine, settings, make_user):
    user, password = make_user()
    for addr in ("198.51.100.1", "192.0.2.10"):
        for _ in range(2):
            _status(engine, settings, user.email, "wrong-password", addr)
    assert _status(engine, settings, user.email, password, "192.0.2.10") == 200
    with read_session(engine) as s:
        left = s.exec(select(LoginAttempt).where(LoginAttempt.email == user.email)).all()
    assert sorted(a.client_addr for a in left) == ["198.51.100.1", "198.51.100.1"]


@pytest.mark.parametrize("limit", ["login_max_failures_per_account_address", "login_max_failures_per_account"])
def test_limits_are_settings(monkeypatch, limit):
    from config import Settings

    monkeypatch.setenv("BOOKGATE_" + limit.upper(), "7")
    assert getattr(Settings(_env_file=None), limit) == 7  # type: ignore[call-arg]
