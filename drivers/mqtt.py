"""MQTT broker connections, shared by every MQTT driver family, their simulators and the broker
account files (``bookgate mqtt``).

One URL says where the broker is and how to log in (``mqtt://user:pass@host:1883`` or
``mqtts://host:8883`` for TLS); the CA file and client certificate are separate options because
they are paths on this machine, not part of the broker's address.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str | None = None
    keepalive: int = 30

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client_id: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        keepalive: int = 30,
    ) -> MqttSettings:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"MQTT URL has no host: {url!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            client_id=client_id,
            keepalive=keepalive,
        )

    def with_client_id(self, client_id: str) -> MqttSettings:
        return replace(self, client_id=client_id)

    @property
    def safe_url(self) -> str:
        """The URL without the password, for logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def make_client(
    settings: MqttSettings,
    *,
    client_id_prefix: str = "bookgate",
    will: tuple[str, str] | None = None,
    max_queued: int = 10_000,
) -> mqtt.Client:
    """A configured but not yet connected paho client (MQTT 3.1.1, clean session).

    Clean sessions match the esp-rfid firmware: commands published while a device is away are not
    queued for it, so the driver's retries, not the broker, decide what happens to them.
    """
    client_id = settings.client_id or f"{client_id_prefix}-{secrets.token_hex(4)}"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_queued_messages_set(max_queued)
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Commands and acknowledgements are small packets answered one by one: without this, Nagle's
    algorithm holds each for the previous one's TCP ack (about 40 ms a round trip on Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a test double, a UNIX socket)
        pass
