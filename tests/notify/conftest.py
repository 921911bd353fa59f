"""Real receivers for delivery tests: an SMTP server (aiosmtpd) and an HTTP server on free
loopback ports, each recording what it accepted and able to refuse on demand."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from config import Settings
from schedules.delivery import DeliveryWorker
from tests.bms.conftest import Person, book, local, people, sites  # noqa: F401 - fixtures reused

__all__ = ["Person", "book", "local"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


@dataclass
class SmtpSink:
    """What the SMTP server accepted; addresses in `refuse` get 550 at RCPT TO."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@dataclass
class HookSink:
    """What the HTTP receiver got; `answers` are popped for each request (then 200), `delay` slows it."""

    port: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for _, b in self.requests]


@pytest.fixture
def hooks() -> Iterator[HookSink]:
    sink = HookSink(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if sink.delay:
                time.sleep(sink.delay)
            with sink.lock:
                code = sink.answers.pop(0) if sink.answers else 200
                if code == 200:
                    sink.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", sink.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture
def mail_settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "mail_from": "Bookgate <bookgate@example.com>",
            "webhook_timeout_seconds": 0.5,
            "delivery_max_attempts": 3,
        }
    )


@pytest.fixture
def worker(engine, mail_settings: Settings) -> Iterator[DeliveryWorker]:
    """A delivery worker driven round by round by the test (no threads)."""
    w = DeliveryWorker(engine, mail_settings, reminders=False)
    yield w
    w.stop()


def deliver(w: DeliveryWorker, name: str = "test-worker") -> int:
    """Rounds until nothing is available; how many rows were handled."""
    total = 0
    while True:
        n = w.run_once(name)
        if not n:
            return total
        total += n
