"""Per-controller MQTT accounts: issue a controller its own password (shown once, kept only as
the broker's hash) and write the broker's password and ACL files from the database.

Which controllers speak MQTT, and on which base topic, is their driver family's word (the drivers'
registry), so a new MQTT family gets accounts without a change here."""

from __future__ import annotations

import secrets

from sqlmodel import Session, col, select

from access.models import Controller
from core import audit
from drivers.mosquitto import Account, acl_file, password_file, password_hash
from drivers.mqtt import MqttSettings
from drivers.registry import REGISTRY, DriverRegistry


class AccountError(ValueError):
    pass


def issue(session: Session, key: str, actor: audit.Actor, *, drivers: DriverRegistry = REGISTRY) -> tuple[str, str]:
    """A new password for the controller `key` (replacing any earlier one): (username, password)."""
    ctl = session.exec(select(Controller).where(col(Controller.key) == key)).first()
    if ctl is None:
        raise AccountError(f"no controller {key!r}")
    if ctl.driver not in drivers.mqtt_kinds():
        raise AccountError(f"controller {key!r} does not use MQTT (driver {ctl.driver})")
    password = secrets.token_urlsafe(24)  # esp-rfid keeps up to 32 characters
    ctl.mqtt_username = f"ctl-{key}"
    ctl.mqtt_secret = password_hash(password)
    session.add(ctl)
    audit.record(session, actor, "controller.mqtt_account", "controller", key, username=ctl.mqtt_username)
    return ctl.mqtt_username, password


def broker_files(session: Session, mqtt_url: str, *, drivers: DriverRegistry = REGISTRY) -> tuple[str, str]:
    """(password file, ACL file) for the gateway's account (from its MQTT URL) and every
    controller with an account."""
    gateway = MqttSettings.from_url(mqtt_url) if mqtt_url else None
    if gateway is None or not gateway.username or not gateway.password:
        raise AccountError("BOOKGATE_MQTT_URL must carry the gateway's own username and password")
    rows = session.exec(
        select(Controller).where(Controller.active, Controller.mqtt_username.is_not(None))  # type: ignore[union-attr]
    ).all()
    controllers = [
        Account(c.mqtt_username, c.mqtt_secret, drivers.mqtt_topic(c.driver, c.settings))  # type: ignore[arg-type]
        for c in sorted(rows, key=lambda c: c.key)
    ]
    me = Account(gateway.username, password_hash(gateway.password))
    if any(c.username == me.username for c in controllers):
        raise AccountError(f"the gateway's username {me.username!r} is also a controller's")
    return password_file([me, *controllers]), acl_file(me, controllers)
