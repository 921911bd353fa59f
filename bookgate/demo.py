"""The demo site: the example residence with an admin, a manager, reception and residents.

Passwords are generated at every start and printed; none is written in the code.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import col, select

from access.levels import sync_levels
from access.models import Controller, Credential
from access.protocol import compact_hex
from bookgate.provision import import_site_file
from config import Settings
from config.site import example_path
from core import auth
from core.audit import SYSTEM
from core.db import ident, utcnow, write_session
from core.errors import AppError
from core.models import Site, User
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
        s.flush()
        sync_levels(s, utcnow())  # the residents hold the site's default level: Alice opens the entrance
    expect_visitors(engine)
    return out


# Today's expected visitors: (host, name, company, hours from now to arrival, day badge or None).
VISITORS = (
    (f"alice@{DOMAIN}", "Victor Besson", "Plomberie Besson", 0, "04d0e1a5e0c0a1"),
    (f"alice@{DOMAIN}", "Inès Garnier", None, 1, None),
    (f"bob@{DOMAIN}", "Hannah Keller", "Keller Architektur", 2, None),
)


def expect_visitors(engine: Engine) -> None:
    """A few visitors expected today (once per day): their QR codes are on the hosts' "My visitors"
    page, and reception checks them in at /reception. The first holds a day badge, so its check-in
    sends a grant for the building entrance to the simulated controller."""
    from vms import schemas
    from vms import service as vms

    now = utcnow()
    with write_session(engine) as s:
        rita = s.exec(select(User).where(col(User.email) == f"reception@{DOMAIN}")).one()
        desk = auth.load_principal(s, rita)
        # "Today" is the site's day, and the first visitor's: he came a quarter of an hour ago.
        zone = ZoneInfo(s.exec(select(Site.timezone).where(col(Site.key) == SITE)).one())
        today = (now - timedelta(minutes=15)).astimezone(zone).date()
        if vms.list_visits(s, desk, site_key=SITE, day=today, status=None, q=None, limit=1):
            return
        for email, name, company, hours, badge in VISITORS:
            host = s.exec(select(User).where(col(User.email) == email)).one()
            start = now + timedelta(hours=hours) - timedelta(minutes=15)
            data = schemas.InviteIn(
                site=SITE,
                visitors=[schemas.VisitorIn(name=name, company=company)],
                start=start,
                end=start + timedelta(hours=3),
                purpose="demo visit",
            )
            ((visit, _token),) = vms.invite(s, auth.load_principal(s, host), data)
            if badge and visit.door_ids:
                try:
                    vms.give_badge(s, desk, ident(visit), badge)
                except AppError:
                    pass  # that badge was handed out on an earlier demo day: this visitor goes without


def start_mail_catcher(settings: Settings) -> tuple[Settings, Any]:
    """The demo's mail server: an SMTP catcher on a free loopback port that keeps every message
    in a Maildir under var/, which admins read in the portal (/admin/mailbox). Returns the settings
    pointed at it, and the running catcher (stop it with `.stop()`)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection at INFO
    maildir = Path(settings.ensure_var_dir()) / "demo-mailbox"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    return (
        settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_starttls": False,
                "smtp_tls": False,
                "smtp_username": "",
                "smtp_password": "",
                "mail_from": f"Bookgate demo <bookgate@{DOMAIN}>",
                "mail_catcher_dir": str(maildir),
            }
        ),
        controller,
    )


def start_ble_locks(engine: Engine, settings: Settings) -> list[str]:
    """The site's BLE locks, emulated with bumble in this process on a radio the driver reaches over
    HCI-over-TCP; each is keyed as the gateway keys it, and the demo points its controller's
    ``adapter`` at that radio. Now and then a demo resident presents a badge at one of them, so the
    doors page shows the lock's own decisions. Returns the controller keys emulated."""
    import logging
    import random
    import threading
    import time

    from access.models import Controller
    from bookgate.controllers import device_key_deriver
    from drivers.ble.emulator import LockSite
    from drivers.ble.family import key_label

    derive = device_key_deriver(settings)
    with write_session(engine) as s:
        controllers = s.exec(select(Controller).where(col(Controller.driver) == "ble", Controller.active)).all()
        if not controllers:
            return []
        site = LockSite().start()
        locks = [site.add_lock(c.settings["address"], derive(key_label(c.settings["address"]))) for c in controllers]
        adapter = site.add_radio()
        for c in controllers:
            c.settings = {**c.settings, "adapter": adapter}
            s.add(c)
        keys = [c.key for c in controllers]
    badges = [a.badge for a in ACCOUNTS if a.badge]

    def walk_ins() -> None:
        while True:
            time.sleep(25)
            try:
                site.call(random.choice(locks).present("uid", random.choice(badges)))
            except Exception:  # the demo goes on whatever one presentation does
                logging.getLogger("bookgate.demo").exception("a demo presentation at a BLE lock failed")

    threading.Thread(target=walk_ins, name="demo-ble-walk-ins", daemon=True).start()
    return keys


def start_osdp_line(engine: Engine, var_dir: Path) -> object | None:
    """The demo's OSDP line: libosdp's own PDs for the site's OSDP controllers on a pseudo-terminal,
    which the gateway opens as its serial port. The PDs start unkeyed and the gateway keys them in
    install mode, as a new installation does; the keys stay under ``var/osdp`` (mode 0600).
    Demo residents present their badges at these readers now and then. None if libosdp is missing."""
    import random
    import threading
    import time

    try:
        from drivers.osdp.simulator import SimulatedLine, SimulatedPd
    except ImportError as exc:
        print(f"  (no OSDP simulation: {exc})")
        return None
    with write_session(engine) as s:
        rows = s.exec(select(Controller).where(col(Controller.driver) == "osdp", Controller.active)).all()
        if not rows:
            return None
        line = SimulatedLine([SimulatedPd(int(c.settings.get("address", 0))) for c in rows])
        for c in rows:
            settings = dict(c.settings)
            settings.update(port=line.port, scbk_file=str(var_dir / "osdp" / f"{c.key}.key"), install_mode=True)
            c.settings = settings
            s.add(c)
        keys = [c.key for c in rows]
    line.start()
    cabinets = {int(c.settings.get("address", 0)) for c in rows if c.settings.get("key_slots")}
    for pd in line.pds:  # every key hangs in its slot (input 1), every door is shut
        if pd.address in cabinets:
            pd.set_input(1, True)
    badges = [a.badge for a in ACCOUNTS if a.badge]

    def walk_ins() -> None:
        while True:
            time.sleep(25)
            try:
                random.choice(line.pds).present_card(bytes.fromhex(random.choice(badges)))
            except Exception:  # the demo goes on whatever one presentation does
                logging.getLogger("bookgate.demo").exception("a demo OSDP presentation failed")

    threading.Thread(target=walk_ins, name="demo-osdp-walk-ins", daemon=True).start()
    print(f"  simulated OSDP line {line.port}: {', '.join(keys)} (`bookgate sim osdp` runs one by hand)")
    return line
