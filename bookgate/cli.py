"""The `bookgate` command: serve, demo, db, import, admin, audit."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from config import Settings, get_settings
from core.audit import Actor


def _engine(settings: Settings) -> Engine:
    from core.db import make_engine

    if settings.effective_database_url.startswith("sqlite"):
        settings.ensure_var_dir()
    return make_engine(settings.effective_database_url)


CLI_ACTOR = Actor(id=None, label="cli")


def _fail(message: str, code: int = 2) -> int:
    print(f"bookgate: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bookgate.app import create_app

    host, port = args.host or settings.host, args.port or settings.port
    workers = getattr(args, "workers", None) or 1
    if workers < 1:
        return _fail("--workers must be at least 1")
    print(f"Bookgate portal: http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", flush=True)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", **proxy_options(settings))
        return 0
    # Several worker processes (bookgate.workers): what they would otherwise race for is done
    # here once: the schema, the secret key file. They get these settings, not a fresh read.
    import json

    from bookgate import migrate
    from bookgate.workers import SETTINGS_ENV, serve_workers

    settings.effective_secret_key()
    engine = _engine(settings)
    migrate.upgrade(engine)
    engine.dispose()
    os.environ[SETTINGS_ENV] = json.dumps(settings.model_dump(mode="json"))
    serve_workers(host, port, workers, log_level="info", **proxy_options(settings))
    return 0


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy handling, from BOOKGATE_TRUSTED_PROXIES only. uvicorn would otherwise believe
    X-Forwarded-For from 127.0.0.1 (and from FORWARDED_ALLOW_IPS): anything on the machine could
    then pick its client address, defeating the per-address login limit and forging the audit's.
    Empty (the default): no proxy header is read, the client address is the socket's."""
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    if not proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bookgate import demo, migrate
    from core.security import hashing_for

    engine = _engine(settings)
    migrate.upgrade(engine)
    accounts = demo.prepare(engine, hashing_for(settings))
    ble_locks = demo.start_ble_locks(engine, settings)  # before the server builds its BLE driver
    _osdp_line = demo.start_osdp_line(engine, settings.var_dir.resolve())  # before it opens the serial port
    engine.dispose()
    print("\nDemo site 'Résidence Les Tilleuls' is ready. Accounts (passwords are new at each start):")
    for role, email, password in accounts:
        print(f"  {role:<14} {email:<32} {password}")
    url = _start_demo_controllers(settings)
    if ble_locks:
        print(f"  emulated BLE locks (bumble): {', '.join(ble_locks)}")
    if not settings.smtp_host:  # mail goes to a catcher whose inbox admins read at /admin/mailbox
        settings, _catcher = demo.start_mail_catcher(settings)
        print(f"  e-mail: caught on smtp://127.0.0.1:{settings.smtp_port}, read it as admin at /admin/mailbox")
    print()
    # The server's dispatcher pushes grants to the simulated controllers through this broker.
    return cmd_serve(args, settings.model_copy(update={"mqtt_url": url}) if url else settings)


def _start_demo_controllers(settings: Settings) -> str | None:
    """The demo's MQTT side: an embedded broker (unless one is configured) and a simulated
    esp-rfid controller for each of the site's esp-rfid controllers, on background threads."""
    import asyncio
    import threading

    from config.site import example_path, load_site_file
    from drivers.esprfid.settings import EsprfidSettings
    from drivers.esprfid.simulator import SimulatorFleet, run_simulators

    url = settings.mqtt_url
    if not url:
        from drivers.broker import start_embedded_broker

        try:
            url = start_embedded_broker(host="127.0.0.1", port=0).url
        except OSError as exc:
            print(f"  (no embedded MQTT broker: {exc}; controllers are not simulated)")
            return None
        print(f"  embedded MQTT broker   {url}")
    # the example's esp-rfid controllers, their settings read as the driver reads them (defaults too)
    devices = [
        EsprfidSettings.model_validate(c.settings)
        for site in load_site_file(example_path()).sites
        for c in site.controllers
        if c.driver == "esprfid"
    ]
    topics = [f"{d.topic}@{d.doorip}@{d.reader}" for d in devices]

    def walk_ins(fleet: SimulatorFleet) -> None:
        """Now and then a demo resident holds a badge to a reader, so the doors page shows life:
        granted where a booking covers them (or the gateway allows online), denied elsewhere."""
        import random
        import time

        from bookgate.demo import ACCOUNTS

        badges = [a.badge for a in ACCOUNTS if a.badge]
        while True:
            time.sleep(20)
            try:
                random.choice(fleet.devices).present_card(bytes.fromhex(random.choice(badges)))
            except Exception:  # the demo goes on whatever one presentation does
                logging.getLogger("bookgate.demo").exception("a demo presentation failed")

    def on_ready(fleet: SimulatorFleet) -> None:
        threading.Thread(target=walk_ins, args=(fleet,), name="demo-walk-ins", daemon=True).start()

    thread = threading.Thread(
        target=lambda: asyncio.run(run_simulators(url, topics, heartbeat_interval=30.0, on_ready=on_ready)),
        name="demo-controllers",
        daemon=True,
    )
    thread.start()
    print(f"  simulated esp-rfid controllers: {', '.join(t.split('@')[0] for t in topics)}")
    print("  demo residents present their badges now and then: see /doors as manager or reception")
    return url


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from bookgate import migrate

    engine = _engine(settings)
    try:
        if args.action == "upgrade":
            migrate.upgrade(engine, args.revision or "head")
        elif args.action == "downgrade":
            if not args.revision:
                return _fail("db downgrade needs a revision (e.g. base)")
            migrate.downgrade(engine, args.revision)
        print(
            f"database at revision {migrate.current_revision(engine) or 'base'} (head: {migrate.head_revision(engine)})"
        )
    except migrate.MigrationError as exc:
        return _fail(str(exc))
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from bookgate import migrate
    from bookgate.provision import import_site_file
    from config.site import SiteFileError

    engine = _engine(settings)
    migrate.upgrade(engine)
    try:
        report = import_site_file(engine, args.file, CLI_ACTOR)
    except SiteFileError as exc:
        print(f"bookgate: {args.file} refused, nothing written:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    if not report.changed:
        print("no change: the database already matches the file")
    for line in report.changes:
        print(line)
    return 0


def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from bookgate import migrate
    from core import auth
    from core.db import write_session
    from core.errors import AppError
    from core.security import hashing_for

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    engine = _engine(settings)
    migrate.upgrade(engine)
    try:
        data = auth.UserCreate(
            email=args.email,
            name=args.name or args.email.split("@")[0],
            password=password,
            roles=[auth.RoleIn(role="admin")],
        )
        with write_session(engine) as s:
            user = auth.create_user(s, CLI_ACTOR, data, hashing_for(settings))
    except ValidationError as exc:
        return _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except AppError as exc:
        return _fail(exc.message)
    print(f"admin {user.email} created (id {user.id})")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Walk the chain against the signed checkpoint (var_dir/audit-checkpoint, outside the database);
    when all is intact, move the checkpoint to the head. Run it periodically (cron, a timer)."""
    from core import audit
    from core.db import read_session

    engine = _engine(settings)
    path = settings.ensure_var_dir() / audit.CHECKPOINT_FILE
    secret = settings.effective_secret_key()
    try:
        checkpoint = audit.read_checkpoint(path, audit.checkpoint_key(secret))
    except audit.CheckpointError as exc:
        return _fail(f"{exc}: the checkpoint was tampered with or the secret key changed", code=1)
    with read_session(engine) as s:
        result = audit.verify(s, key=audit.chain_key(secret), checkpoint=checkpoint)
    if result.ok:
        if result.head is not None:
            audit.store_checkpoint(path, result.head, audit.checkpoint_key(secret))
        since = "no checkpoint before" if checkpoint is None else f"checkpoint had {checkpoint.rows}"
        print(f"audit chain intact: {result.checked} rows ({since}); checkpoint written to {path}")
        return 0
    if result.problem == "truncated":
        return _fail(f"audit trail truncated: {result.reason}", code=1)
    return _fail(
        f"audit chain broken at row {result.first_bad_id} (rewritten): {result.reason} "
        f"({result.checked} rows before it are intact)",
        code=1,
    )


def cmd_vms(args: argparse.Namespace, settings: Settings) -> int:
    """`bookgate vms purge [--dry-run]`: empty the personal data of visitors past their site's
    retention period (the scheduler does it every 6 hours); --dry-run only lists them."""
    from bookgate import migrate
    from core.db import utcnow, write_session
    from vms import service as vms_service

    engine = _engine(settings)
    migrate.upgrade(engine)
    with write_session(engine) as s:
        items = vms_service.purge(s, utcnow(), dry_run=args.dry_run, actor=CLI_ACTOR)
        if args.dry_run:
            s.rollback()
    verb = "would purge" if args.dry_run else "purged"
    for item in items:
        last = item["last_visit"]
        print(f"  visitor {item['visitor_id']} (user {item['user_id']}) of {item['site']}, last visit {last}")
    print(f"{verb} {len(items)} visitor(s)")
    return 0


def cmd_mqtt(args: argparse.Namespace, settings: Settings) -> int:
    """Per-controller broker accounts: `issue KEY` shows a new password once; `files DIR` writes
    Mosquitto's password_file and acl_file for the gateway and every controller with an account."""
    import os
    from pathlib import Path

    from bookgate import migrate, mqtt_accounts
    from core.db import read_session, write_session

    engine = _engine(settings)
    migrate.upgrade(engine)
    try:
        if args.mqtt_command == "issue":
            with write_session(engine) as s:
                username, password = mqtt_accounts.issue(s, args.key, CLI_ACTOR)
            print(f"MQTT account for {args.key}: username {username} password {password}")
            print("Enter both in the controller's MQTT settings; the password is not shown again.")
            print("Then rewrite the broker's files with `bookgate mqtt files DIR` and reload the broker.")
            return 0
        with read_session(engine) as s:
            passwd, acl = mqtt_accounts.broker_files(s, settings.mqtt_url)
    except mqtt_accounts.AccountError as exc:
        return _fail(str(exc))
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("passwd", passwd), ("acl", acl)):
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    print(f"wrote {out / 'passwd'} and {out / 'acl'}: in mosquitto.conf, password_file and acl_file")
    return 0


def cmd_sim(args: argparse.Namespace, settings: Settings) -> int:
    """`bookgate sim KIND ...`: the simulator the registry names for that kind of controller."""
    from drivers.registry import REGISTRY

    simulate = REGISTRY.simulators()[args.driver]
    argv = list(args.rest)
    mqtt = args.driver in REGISTRY.mqtt_kinds()
    if mqtt and not any(a == "--mqtt-url" or a.startswith("--mqtt-url=") for a in argv) and settings.mqtt_url:
        argv += ["--mqtt-url", settings.mqtt_url]
    return simulate(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bookgate", description="Bookgate reservation and access gateway")
    sub = p.add_subparsers(dest="command", required=True)

    for name, helptext in (("serve", "run the HTTP server"), ("demo", "serve the demo site")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--host")
        sp.add_argument("--port", type=int)
        if name == "serve":  # the demo stays one process (its broker and simulators live in it)
            sp.add_argument(
                "--workers",
                type=int,
                default=os.cpu_count() or 1,
                help="HTTP worker processes (default: the CPU count); drivers and the clock run in one of them",
            )
        sp.set_defaults(func=cmd_serve if name == "serve" else cmd_demo)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?")
    db.set_defaults(func=cmd_db)

    imp = sub.add_parser("import", help="import a site configuration file (YAML)")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)

    admin = sub.add_parser("admin", help="user administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create", help="create an admin user")
    create.add_argument("--email", required=True)
    create.add_argument("--name")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    create.set_defaults(func=cmd_admin)

    from drivers.registry import REGISTRY

    simulated = sorted(REGISTRY.simulators())
    sim = sub.add_parser(
        "sim", help=f"simulated door controllers (see `bookgate sim {simulated[0]} --help`)", add_help=False
    )
    sim.add_argument("driver", choices=simulated)
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_sim)

    mq = sub.add_parser("mqtt", help="per-controller MQTT accounts and the broker's files")
    mq_sub = mq.add_subparsers(dest="mqtt_command", required=True)
    issue = mq_sub.add_parser("issue", help="give a controller its own MQTT account (password shown once)")
    issue.add_argument("key", help="controller key")
    issue.set_defaults(func=cmd_mqtt)
    files = mq_sub.add_parser("files", help="write Mosquitto's password_file and acl_file")
    files.add_argument("dir")
    files.set_defaults(func=cmd_mqtt)

    vms = sub.add_parser("vms", help="visitors")
    vms_sub = vms.add_subparsers(dest="vms_command", required=True)
    vpurge = vms_sub.add_parser("purge", help="purge visitors' personal data past the retention period")
    vpurge.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    vpurge.set_defaults(func=cmd_vms)

    aud = sub.add_parser("audit", help="audit trail")
    aud.add_argument("action", choices=["verify"])
    aud.set_defaults(func=cmd_audit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "amqtt", "transitions", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic ValidationError: a bad BOOKGATE_* variable
        return _fail(f"bad settings: {exc}")
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
