"""`core.db.among`: a list of values as one parameter (an array on PostgreSQL, a JSON array read
by json_each on SQLite), with the same rows as `IN (...)` and one compiled statement whatever the
list's length."""

from __future__ import annotations

from sqlmodel import col, select

from core.db import among, read_session, write_session
from core.models import User


def _users(engine, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    with write_session(engine) as s:
        users = [User(email=f"among-{i}@example.org", name=f"Among {i}") for i in range(n)]
        s.add_all(users)
        s.flush()
        return [u.id for u in users]  # type: ignore[misc]


def test_among_finds_what_in_finds(engine):
    ids = _users(engine, 30)
    with read_session(engine) as s:
        for wanted in ([], ids[:1], ids[::3], [*ids, 10**9], [ids[0], ids[0]]):
            got = sorted(s.exec(select(User.id).where(among(s, col(User.id), wanted))).all())
            assert got == sorted(s.exec(select(User.id).where(col(User.id).in_(wanted))).all())
            assert got == sorted(set(wanted) & set(ids))
        # strings too, beside another condition
        emails = ["among-2@example.org", "among-5@example.org", "nobody@example.org"]
        names = s.exec(select(User.name).where(among(s, col(User.email), emails), col(User.id) > 0)).all()
        assert sorted(names) == ["Among 2", "Among 5"]


def test_the_list_is_one_parameter(engine):
    ids = _users(engine, 3)
    with read_session(engine) as s:
        short = select(User.id).where(among(s, col(User.id), ids[:1]))
        long = select(User.id).where(among(s, col(User.id), ids * 200))
        dialect = s.get_bind().dialect
        a, b = short.compile(dialect=dialect), long.compile(dialect=dialect)
        assert str(a) == str(b)  # one statement, cached once
        assert len(b.params) == 1
