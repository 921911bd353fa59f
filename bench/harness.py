"""A real uvicorn server on 127.0.0.1 in a background thread, and users with ready sessions
(shared by the tests and the benchmarks)."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import uvicorn
from sqlalchemy import Engine

from core.db import utcnow, write_session
from core.models import AuthSession, RoleGrant, User
from core.security import new_token, token_hash


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", limit_concurrency=1000, backlog=2048)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def bulk_residents(engine: Engine, site_id: int, n: int, prefix: str) -> list[tuple[int, str]]:
    """n residents of a site with a live session each, written straight to the database
    (hashing n passwords would only slow the test down); returns (user id, bearer token)."""
    out = []
    with write_session(engine) as s:
        for i in range(n):
            user = User(email=f"{prefix}{i}-{secrets.token_hex(3)}@example.com", name=f"{prefix} {i}", unit=f"U{i}")
            s.add(user)
            s.flush()
            s.add(RoleGrant(user_id=user.id, role="resident", site_id=site_id))
            token = new_token("bgs")
            s.add(AuthSession(user_id=user.id, token_hash=token_hash(token), expires_at=utcnow() + timedelta(hours=1)))
            out.append((user.id, token))
    return out
