"""The demo site: the example residence with an admin, a manager, reception and residents.

Passwords are generated at every start and printed; none is written in the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import col, select

from access.models import Credential
from access.protocol import compact_hex
from bookgate.provision import import_site_file
from config.site import example_path
from core import auth
from core.audit import SYSTEM
from core.db import ident, write_session
from core.models import User
from core.security import PasswordHashing, generate_password

DOMAIN = "tilleuls.example.com"
SITE = "les-tilleuls"


@dataclass(frozen=True)
class DemoAccount:
    email: str
    name: str
    unit: str | None
    roles: tuple[auth.RoleIn, ...]
    badge: str | None = None


ACCOUNTS = (
    DemoAccount(f"admin@{DOMAIN}", "Ada Admin", None, (auth.RoleIn(role="admin"),)),
    DemoAccount(
        f"manager@{DOMAIN}",
        "Marc Manager",
        None,
        tuple(auth.RoleIn(role="venue_manager", venue=v) for v in ("sports", "common-rooms", "garage")),
    ),
    DemoAccount(f"reception@{DOMAIN}", "Rita Reception", None, (auth.RoleIn(role="reception", site=SITE),)),
    DemoAccount(
        f"alice@{DOMAIN}", "Alice Martin", "A-12", (auth.RoleIn(role="resident", site=SITE),), "04a10b2c3d4e80"
    ),
    DemoAccount(f"bob@{DOMAIN}", "Bob Durand", "B-03", (auth.RoleIn(role="resident", site=SITE),), "04b0b005b0b080"),
)


def prepare(engine: Engine, hashing: PasswordHashing) -> list[tuple[str, str, str]]:
    """Import the example site and (re)set the demo accounts; return (role, email, password)."""
    import_site_file(engine, example_path(), SYSTEM)
    out = []
    with write_session(engine) as s:
        for acct in ACCOUNTS:
            password = generate_password()
            user = s.exec(select(User).where(col(User.email) == acct.email)).first()
            if user is None:
                auth.create_user(
                    s,
                    SYSTEM,
                    auth.UserCreate(
                        email=acct.email, name=acct.name, unit=acct.unit, password=password, roles=list(acct.roles)
                    ),
                    hashing,
                )
            else:
                auth.update_user(
                    s,
                    SYSTEM,
                    ident(user),
                    auth.UserUpdate(password=password, is_active=True, roles=list(acct.roles)),
                    hashing,
                )
            out.append((acct.roles[0].role.value, acct.email, password))
            user = s.exec(select(User).where(col(User.email) == acct.email)).one()
            if (
                acct.badge
                and s.exec(
                    select(Credential).where(col(Credential.kind) == "badge", col(Credential.value) == acct.badge)
                ).first()
                is None
            ):
                s.add(
                    Credential(
                        user_id=ident(user),
                        kind="badge",
                        format="uid",
                        value=acct.badge,
                        compact=compact_hex(acct.badge),
                        label="demo badge",
                    )
                )
    return out
