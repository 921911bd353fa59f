"""One unit of work per request: the route's writes are committed when it returns, before the
client hears anything; a refusal rolls them back unless it asks to keep them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from core.db import read_session
from core.deps import WriteSessionDep
from core.errors import Conflict, install_error_handlers
from core.models import User


def _app(engine) -> FastAPI:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.state.engine = engine
    install_error_handlers(app)

    @app.post("/ok/{email}", status_code=201)
    def ok(email: str, session: WriteSessionDep) -> dict:
        session.add(User(email=email, name="kept"))
        return {"email": email}

    @app.post("/refused/{email}")
    def refused(email: str, session: WriteSessionDep) -> dict:
        session.add(User(email=email, name="rolled back"))
        session.flush()
        raise Conflict("nope", "refused after writing")

    @app.post("/refused-but-noted/{email}")
    def noted(email: str, session: WriteSessionDep) -> dict:
        session.add(User(email=email, name="noted"))
        session.flush()
        raise Conflict("void", "refused, the trace stays", keep=True)

    return app


def _names(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with read_session(engine) as s:
        return sorted(u.name for u in s.exec(select(User).where(User.email.like("uow-%"))).all())  # type: ignore[attr-defined]


def test_success_commits_refusal_rolls_back_and_keep_keeps(engine):
    client = TestClient(_app(engine), raise_server_exceptions=False)
    assert client.post("/ok/uow-a@example.com").status_code == 201
    assert _names(engine) == ["kept"]  # committed before the response
    r = client.post("/refused/uow-b@example.com")
    assert r.status_code == 409 and r.json()["code"] == "nope"
    assert _names(engine) == ["kept"]
    r = client.post("/refused-but-noted/uow-c@example.com")
    assert r.status_code == 409
    assert _names(engine) == ["kept", "noted"]


def test_a_commit_that_fails_never_answers_success(engine):
    """The commit happens before the response: a write the database refuses at commit time
    (here a duplicate e-mail, only checked when flushed) cannot come back as 201."""
    client = TestClient(_app(engine), raise_server_exceptions=False)
    assert client.post("/ok/uow-dup@example.com").status_code == 201
    again = client.post("/ok/uow-dup@example.com")
    assert again.status_code >= 400
