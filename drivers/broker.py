"""An embedded MQTT broker (amqtt) so the demo runs without installing Mosquitto.

It runs on its own thread with its own event loop, so it works the same whether the caller is
synchronous (CLI, tests) or has an event loop of its own (the web app). It listens on the loopback
interface only and lets anyone connect anonymously: it is for one machine, never a network.
Production deployments point the gateway at a real broker (Mosquitto, EMQX) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("drivers.broker")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedBroker:
    """Handle on a running embedded broker: ``url`` to connect to, ``stop()`` to shut it down."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _broker: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout)
        except Exception:
            log.exception("embedded MQTT broker did not shut down cleanly")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 5000}},
        "timeout_disconnect_delay": 0,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def _launch(host: str, port: int, timeout: float) -> EmbeddedBroker:
    """Run one broker on ``port`` in a new thread; raise what its start raised."""
    from amqtt.broker import Broker  # imported lazily: only the demo needs it

    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def boot() -> None:
        broker = Broker(_config(host, port), loop=asyncio.get_running_loop())
        await broker.start()
        box["broker"] = broker

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(boot())
        except BaseException as exc:
            box["error"] = exc
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"mqtt-broker-{port}", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise TimeoutError("embedded MQTT broker did not start in time")
    if "error" in box:
        thread.join(timeout)
        raise box["error"]
    return EmbeddedBroker(host, port, loop, thread, box["broker"])


def start_embedded_broker(host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0) -> EmbeddedBroker:
    """Start the broker and return once it accepts connections; ``port=0`` picks a free port."""
    if not _loopback(host):
        raise ValueError(f"the embedded broker listens on loopback only, not {host!r}")
    last_error: Exception | None = None
    for _ in range(5 if port == 0 else 1):  # a picked port can be taken before we bind it
        try:
            handle = _launch(host, port or _free_port(host), timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            last_error = exc
            continue
        log.info("embedded MQTT broker listening on %s", handle.url)
        return handle
    raise RuntimeError(f"embedded MQTT broker could not start: {last_error}") from last_error
