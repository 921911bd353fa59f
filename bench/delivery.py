"""Outbox delivery: messages per second to a local SMTP server and a local webhook receiver,
against the raw rate at which the same receivers accept (one client, one connection, in the same
run), and commit-to-delivery latency when idle.

    .venv/bin/python -m bench.delivery [--backend sqlite|postgresql|both] [--messages N] [--samples N]

The receivers run in a process of their own (aiosmtpd, and http.server threads) and stamp each
arrival with the wall clock. The gateway's path is the whole one: an event row committed to the
outbox (`visit.invited`, addressed to a guest, or to the site's webhook), expanded by the delivery
worker into its delivery (rendered e-mail / signed JSON), then sent by the worker's two threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from bench.common import fresh_database, percentile, pg_reachable
from config import Settings
from core import outbox
from core.db import write_session
from core.models import Site
from notify import channels
from notify.models import WebhookEndpoint
from schedules.delivery import DeliveryWorker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _receivers(smtp_port: int, http_port: int, arrivals: Any, ready: Any) -> None:
    """SMTP and HTTP receivers; each accepted message's id and arrival time go to `arrivals`."""
    from aiosmtpd.controller import Controller

    class Mail:
        async def handle_DATA(self, server, session, envelope):
            head = envelope.content.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
            mid = next(
                (ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("subject:")), ""
            )
            arrivals.put(("mail", mid, time.time()))
            return "250 OK"

    class Hook(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                mid = json.loads(body).get("data", {}).get("n", "")
            except ValueError:
                mid = ""
            arrivals.put(("hook", str(mid), time.time()))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    controller = Controller(Mail(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    server = ThreadingHTTPServer(("127.0.0.1", http_port), Hook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready.set()
    threading.Event().wait()


def _drain(arrivals: Any, kind: str, n: int, timeout: float = 300) -> list[tuple[str, float]]:
    got: list[tuple[str, float]] = []
    deadline = time.time() + timeout
    while len(got) < n:
        k, mid, at = arrivals.get(timeout=max(0.1, deadline - time.time()))
        if k == kind:
            got.append((mid, at))
    return got


def raw_smtp(port: int, n: int, arrivals: Any) -> float:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bench@example.com", "guest@example.com", "raw"
    msg.set_content("raw accept rate")
    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as conn:
        for _ in range(n):
            conn.send_message(msg)
    _drain(arrivals, "mail", n)
    return n / (time.time() - t0)


def raw_http(port: int, n: int, arrivals: Any) -> float:
    body = json.dumps({"id": "raw", "type": "raw", "data": {"n": "raw"}}).encode()
    t0 = time.time()
    with httpx.Client() as client:
        for _ in range(n):
            client.post(f"http://127.0.0.1:{port}/hook", content=body, headers={"Content-Type": "application/json"})
    _drain(arrivals, "hook", n)
    return n / (time.time() - t0)


def _events(engine: Engine, n: int, *, mail: bool, tag: str) -> None:
    with write_session(engine) as s:
        for i in range(n):
            emails = [{"email": f"guest{i}@example.com", "name": "Guest", "locale": "en"}] if mail else []
            outbox.enqueue(
                s,
                "visit.invited",
                {"site": "bench", "host": "Bench Host", "emails": emails, "n": f"{tag}-{i}"},
            )


def gateway(engine: Engine, settings: Settings, n: int, arrivals: Any, *, mail: bool) -> float:
    kind = "mail" if mail else "hook"
    worker = DeliveryWorker(engine, settings, reminders=False).start()
    try:
        t0 = time.time()
        _events(engine, n, mail=mail, tag="bulk")
        _drain(arrivals, kind, n)
        return n / (time.time() - t0)
    finally:
        worker.stop()


def latency(engine: Engine, settings: Settings, samples: int, arrivals: Any) -> list[float]:
    """One message at a time into an idle worker: from its commit to its arrival at the receiver."""
    worker = DeliveryWorker(engine, settings, reminders=False).start()
    out = []
    try:
        time.sleep(0.5)
        for i in range(samples):
            with write_session(engine) as s:
                outbox.enqueue(
                    s,
                    "visit.invited",
                    {
                        "site": "bench",
                        "host": "Bench Host",
                        "n": f"idle-{i}",
                        "emails": [{"email": "idle@example.com", "name": "Idle", "locale": "en"}],
                    },
                )
            committed = time.time()
            [(_mid, at)] = _drain(arrivals, "mail", 1, timeout=30)
            out.append((at - committed) * 1000)
            time.sleep(0.05)
    finally:
        worker.stop()
    return out


def run(backend: str, messages: int, samples: int) -> None:
    smtp_port, http_port = _free_port(), _free_port()
    ctx = mp.get_context("spawn")
    arrivals, ready = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_receivers, args=(smtp_port, http_port, arrivals, ready), daemon=True)
    proc.start()
    ready.wait(30)
    work = Path("var/bench")
    try:
        with fresh_database(backend, work) as (_url, engine):
            settings = Settings(  # type: ignore[call-arg]
                var_dir=work,
                scheduler=False,
                smtp_host="127.0.0.1",
                smtp_port=smtp_port,
                _env_file=None,
                delivery_every_seconds=1.0,
            )
            with write_session(engine) as s:
                site = Site(key="bench", name="Bench site", timezone="Europe/Paris")
                s.add(site)
                s.flush()
                site_id = site.id or 0
            raw_mail = raw_smtp(smtp_port, messages, arrivals)
            gw_mail = gateway(engine, settings, messages, arrivals, mail=True)
            with write_session(engine) as s:
                s.add(
                    WebhookEndpoint(
                        site_id=site_id,
                        url=f"http://127.0.0.1:{http_port}/hook",
                        secret=channels.seal(settings, "whsec_bench"),
                    )
                )
            raw_hook = raw_http(http_port, messages, arrivals)
            gw_hook = gateway(engine, settings, messages, arrivals, mail=False)
            lat = latency(engine, settings, samples, arrivals)
    finally:
        proc.terminate()
    print(f"{backend}: {messages:,} messages each way")
    print(f"  e-mail   raw SMTP {raw_mail:8,.0f}/s   gateway {gw_mail:8,.0f}/s   ({gw_mail / raw_mail:.0%} of raw)")
    print(f"  webhook  raw HTTP {raw_hook:8,.0f}/s   gateway {gw_hook:8,.0f}/s   ({gw_hook / raw_hook:.0%} of raw)")
    print(
        f"  commit-to-delivery, idle, {samples} e-mails: p50 {percentile(lat, 50):.1f} ms  "
        f"p99 {percentile(lat, 99):.1f} ms  max {max(lat):.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if backend == "postgresql" and not pg_reachable():
            print("postgresql: not reachable, skipped")
            continue
        run(backend, args.messages, args.samples)


if __name__ == "__main__":
    main()
