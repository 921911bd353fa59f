"""One unit of work per request: the route's writes are committed when it returns, before the
client hears anything; a refusal rolls them back unless it asks to keep them."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from core.db import read_session
from core.deps import EngineDep, WriteSessionDep, run_unit
from core.errors import Conflict, install_error_handlers
from core.models import User


def _ok(session, email: str) -> dict:  # type: ignore[no-untyped-def]
    session.add(User(email=email, name="kept"))
    return {"email": email}


def _refused(session, email: str) -> dict:  # type: ignore[no-untyped-def]
    session.add(User(email=email, name="rolled back"))
    session.flush()
    raise Conflict("nope", "refused after writing")


def _noted(session, email: str) -> dict:  # type: ignore[no-untyped-def]
    session.add(User(email=email, name="noted"))
    session.flush()
    raise Conflict("void", "refused, the trace stays", keep=True)


def _routes(app: FastAPI, path: str, work, status_code: int = 200) -> None:  # type: ignore[no-untyped-def]
    """`work(session, email)` at `/{path}/{email}` through `WriteSessionDep`, and at
    `/unit/{path}/{email}` run whole on one thread by `run_unit` (a booking's route)."""

    @app.post(f"/{path}/{{email}}", status_code=status_code)
    def through_dependency(email: str, session: WriteSessionDep) -> dict:
        return work(session, email)

    @app.post(f"/unit/{path}/{{email}}", status_code=status_code)
    async def through_run_unit(email: str, engine: EngineDep) -> dict:
        return await run_unit(engine, lambda session: work(session, email))


def _app(engine) -> FastAPI:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.state.engine = engine
    install_error_handlers(app)
    _routes(app, "ok", _ok, 201)
    _routes(app, "refused", _refused)
    _routes(app, "refused-but-noted", _noted)
    return app


def _names(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with read_session(engine) as s:
        return sorted(u.name for u in s.exec(select(User).where(User.email.like("uow-%"))).all())  # type: ignore[attr-defined]


@pytest.mark.parametrize("prefix", ["", "/unit"], ids=["dependency", "run_unit"])
def test_success_commits_refusal_rolls_back_and_keep_keeps(engine, prefix):
    client = TestClient(_app(engine), raise_server_exceptions=False)
    assert client.post(f"{prefix}/ok/uow-a@example.com").status_code == 201
    assert _names(engine) == ["kept"]  # committed before the response
    r = client.post(f"{prefix}/refused/uow-b@example.com")
    assert r.status_code == 409 and r.json()["code"] == "nope"
    assert _names(engine) == ["kept"]
    r = client.post(f"{prefix}/refused-but-noted/uow-c@example.com")
    assert r.status_code == 409
    assert _names(engine) == ["kept", "noted"]


@pytest.mark.parametrize("prefix", ["", "/unit"], ids=["dependency", "run_unit"])
def test_a_commit_that_fails_never_answers_success(engine, prefix):
    """The commit happens before the response: a write the database refuses at commit time
    (here a duplicate e-mail, only checked when flushed) cannot come back as 201."""
    client = TestClient(_app(engine), raise_server_exceptions=False)
    assert client.post(f"{prefix}/ok/uow-dup@example.com").status_code == 201
    again = client.post(f"{prefix}/ok/uow-dup@example.com")
    assert again.status_code >= 400
    assert _names(engine) == ["kept"]


@pytest.mark.parametrize("prefix", ["", "/unit"], ids=["dependency", "run_unit"])
def test_more_concurrent_writers_than_pool_threads_all_finish(engine, prefix):
    """Each unit of work holds SQLite's writer gate from its first statement to its commit; the
    commit must never wait for a request thread while every request thread waits for the gate
    (through `run_unit`: more requests than the write queue's threads, too)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    app = _app(engine)

    def slow(session, email: str) -> dict:  # type: ignore[no-untyped-def]
        session.add(User(email=email, name="crowd"))
        session.flush()  # takes the write lock
        time.sleep(0.01)
        return {"email": email}

    _routes(app, "slow", slow, 201)

    started = time.monotonic()
    # one event loop and one request thread pool (40 threads) serve every request, as in the server
    with TestClient(app, raise_server_exceptions=False) as client, ThreadPoolExecutor(max_workers=80) as pool:
        codes = list(pool.map(lambda i: client.post(f"{prefix}/slow/uow-crowd{i}@example.com").status_code, range(120)))
    assert codes == [201] * 120
    assert time.monotonic() - started < 25  # far from the 30 s gate timeout a deadlock would hit
    assert _names(engine).count("crowd") == 120
