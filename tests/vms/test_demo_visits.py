"""The demo's expected visitors: hosted by residents, with their codes, once per day; the first
one's check-in plans a grant of his day badge on the building entrance."""

from __future__ import annotations

from sqlmodel import col, select

from access.models import Credential, Transition
from bookgate import demo
from core.auth import load_principal
from core.db import read_session, write_session
from core.models import User
from tests.conftest import TEST_HASHING
from vms import service
from vms.models import Visit, Visitor


def test_demo_expects_visitors_reception_can_check_in(engine):
    demo.prepare(engine, TEST_HASHING)
    demo.prepare(engine, TEST_HASHING)  # a second start adds nobody
    with read_session(engine) as s:
        visits = s.exec(select(Visit).order_by(col(Visit.id))).all()
        names = [s.get(Visitor, v.visitor_id).name for v in visits]
        assert names == [n for _, n, *_ in demo.VISITORS]
        victor = visits[0]
        assert victor.badge_credential_id is not None and victor.door_ids
        token = service.visit_token(victor)
    with write_session(engine) as s:
        rita = s.exec(select(User).where(col(User.email) == f"reception@{demo.DOMAIN}")).one()
        visit = service.check_in_by_token(s, load_principal(s, rita), token, demo.SITE)
        assert visit.status == "checked_in"
    with read_session(engine) as s:
        badge = s.get(Credential, victor.badge_credential_id)
        grants = s.exec(
            select(Transition).where(
                col(Transition.source) == f"visit:{victor.id}", col(Transition.credential_id) == badge.id
            )
        ).all()
        assert {t.action for t in grants} == {"grant", "revoke"}
