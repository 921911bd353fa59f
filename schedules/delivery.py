"""The delivery worker: turns outbox events into e-mails and webhook calls and sends them.

Built on `core.outbox` (one queue): rows are claimed with a lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so any number of nodes share them), handled outside any transaction, then marked done
or retried with backoff; after `delivery_max_attempts` a row is parked (`failed_at`) for an admin
to look at and re-send. Two stages: an event is expanded into its deliveries in the same
transaction that settles it (`notify.messages.expand`), and each delivery is sent on its own.

At least once: a node that dies after sending but before marking leaves the row leased; when the
lease runs out another claim sends it again, with the same Message-ID / webhook id.

The worker wakes at once when a commit on its engine wrote outbox rows (`core.outbox.WRITTEN` on
the connection, like the clock's exact wake-up), and polls as a safety net for other nodes' rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine

from bms.waitlist import lapse_offers
from config import Settings
from core import db, outbox
from core.db import open_session, read_session, utcnow, write_session
from notify import channels
from notify.messages import DELIVERY_KINDS, EMAIL, EVENT_KINDS, WEBHOOK, expand
from notify.models import WebhookEndpoint
from schedules.reminders import write_due_reminders
from vms import qr
from vms.models import Visit
from vms.service import visit_token

log = logging.getLogger("bookgate.delivery")

BATCH = 50
SLOW_ROUND_S = 1.0  # a round running longer than this (a slow server) no longer takes the wake-ups


class DeliveryWorker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        threads: int | None = None,
        now: Callable[[], datetime] = utcnow,
        reminders: bool = True,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.threads = max(1, threads or settings.delivery_threads)
        self.now = now
        self.reminders = reminders
        self.lease = timedelta(seconds=settings.delivery_lease_seconds)
        self.email = bool(settings.smtp_host)
        self._stop = threading.Event()
        self._wakes: list[threading.Event] = []
        self._round_began: list[float | None] = []  # per thread: when its current round began (a hint)
        self._runners: list[threading.Thread] = []
        self._next_reminders = 0.0
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> DeliveryWorker:
        if not self.email:
            log.warning("no SMTP server configured (BOOKGATE_SMTP_HOST): no e-mail is sent, webhooks are")
        db.listen(self.engine, "rollback", self._on_rollback)
        db.listen(self.engine, "checkin", self._on_checkin)
        for i in range(self.threads):
            wake = threading.Event()
            self._wakes.append(wake)
            self._round_began.append(None)
            t = threading.Thread(target=self._loop, args=(i, wake), name=f"delivery-{i}", daemon=True)
            self._runners.append(t)
            t.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for w in self._wakes:
            w.set()
        for t in self._runners:
            t.join(timeout)
        for name, fn in (("rollback", self._on_rollback), ("checkin", self._on_checkin)):
            db.unlisten(self.engine, name, fn)
        self._http.close()

    def wake(self) -> None:
        """A commit wrote messages: one thread is enough for what one commit writes. The first
        thread gets every wake-up, so a stream of commits is gathered into its rounds, unless it is
        stuck in a slow round (a slow mail server): then the next thread that is not. A thread that
        finds a full batch wakes the next as well (see `_loop`)."""
        now = time.monotonic()
        for wake, began in zip(self._wakes, self._round_began, strict=True):
            if began is None or now - began < SLOW_ROUND_S:
                wake.set()
                return
        if self._wakes:
            self._wakes[0].set()

    # SQLAlchemy's "commit" event comes just before the database commits, so a worker woken by it
    # could look before the rows are visible and go back to sleep. The connection's return to the
    # pool comes after the commit: the flag a rollback did not clear is read there.
    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(outbox.WRITTEN, None):
            self.wake()

    @staticmethod
    def _on_rollback(conn: Connection) -> None:
        conn.info.pop(outbox.WRITTEN, None)

    def _loop(self, index: int, wake: threading.Event) -> None:
        worker = f"{outbox.new_worker_id()}-{index}"
        gather = self.settings.delivery_gather_seconds
        last_busy = -gather  # when the last round that found work began
        while not self._stop.is_set():
            # A round comes at least `gather` seconds after the last one that found work: a commit
            # arriving right after such a round waits for the next with whatever else arrives
            # meanwhile, instead of costing a round (two transactions) of its own. A worker whose
            # last round found nothing starts at once.
            rest = gather - (time.monotonic() - last_busy)
            if rest > 0 and self._stop.wait(rest):
                break
            wake.clear()
            started = time.monotonic()
            self._round_began[index] = started
            busy = 0
            try:
                if index == 0 and self.reminders:
                    self._periodic()
                busy = self.run_once(worker)
            except Exception:
                log.exception("delivery round failed; the next one retries")
            finally:
                self._round_began[index] = None
            if busy:
                last_busy = started
            if busy >= BATCH:  # a backlog: go on after the gather interval, and one more thread helps
                if len(self._wakes) > 1:
                    self._wakes[(index + 1) % len(self._wakes)].set()
                continue
            # Nothing more is known to be waiting: the next round comes with the next commit's
            # wake-up (one during this round is kept: the event was cleared before it began; the
            # deliveries this round's expansion wrote wake it too) or with the safety-net poll.
            # A round right after a busy one used to look anyway, and found nothing nearly always.
            wake.wait(self.settings.delivery_every_seconds)

    def _periodic(self) -> None:
        """Reminders due, waitlist offers lapsed: on the first thread, every `reminder_every_seconds`."""
        mono = time.monotonic()
        if mono < self._next_reminders:
            return
        self._next_reminders = mono + self.settings.reminder_every_seconds
        now = self.now()
        n = write_due_reminders(self.engine, now)
        if n:
            log.info("reminders written: %s", n)
        n = lapse_offers(self.engine, now)
        if n:
            log.info("waitlist offers lapsed: %s", n)

    # ------------------------------------------------------------ one round

    def run_once(self, worker: str) -> int:
        """Expand available events, then send available deliveries; return how many rows were handled."""
        return self.expand_events(worker) + self.send_deliveries(worker)

    def expand_events(self, worker: str) -> int:
        """Events are database work only: taken, expanded and settled in one transaction. If that
        fails, the batch is claimed with a lease and each event expanded in its own transaction,
        so one bad event is retried (and parked) alone and never holds the others back."""
        with read_session(self.engine) as look:
            if not outbox.any_available(look, EVENT_KINDS):
                return 0
        try:
            with write_session(self.engine) as s, s.no_autoflush:  # the deliveries go in at once
                rows = outbox.take(s, EVENT_KINDS, limit=BATCH)
                for row in rows:
                    expand(s, _claimed(row), self.settings.public_url, email=self.email)
                s.flush()
                outbox.settle_taken(s, rows)
            return len(rows)
        except Exception as exc:
            log.info("a batch of events failed to expand (%s); expanding one by one", exc)
        batch = outbox.claim(self.engine, worker, EVENT_KINDS, limit=BATCH, lease=self.lease)
        for msg in batch:
            try:
                with write_session(self.engine) as s:
                    expand(s, msg, self.settings.public_url, email=self.email)
                    outbox.settle(s, [msg.id], worker)
            except Exception as exc:
                log.warning("event %s (%s) could not be expanded: %s", msg.id, msg.kind, exc)
                self._failed(msg, worker, exc)
        return len(batch)

    def send_deliveries(self, worker: str) -> int:
        with read_session(self.engine) as look:
            if not outbox.any_available(look, DELIVERY_KINDS):
                return 0
        batch = outbox.claim(self.engine, worker, DELIVERY_KINDS, limit=BATCH, lease=self.lease)
        if not batch:
            return 0
        secrets = self._endpoints([m.payload.get("endpoint_id") for m in batch if m.kind == WEBHOOK])
        done: list[int] = []
        with channels.mailer(self.settings) as mail:
            for msg in batch:
                try:
                    if msg.kind == EMAIL:
                        mail.send(msg.payload, self._invitation_code(msg.payload))
                    else:
                        target = secrets.get(int(msg.payload["endpoint_id"]))
                        if target is not None:  # a removed or disabled endpoint gets nothing more
                            channels.post_webhook(self._http, target[0], target[1], msg.payload["body"])
                except Exception as exc:
                    log.warning("delivery %s (%s) failed: %s", msg.id, msg.kind, exc)
                    self._failed(msg, worker, exc)
                else:
                    done.append(msg.id)
        outbox.mark_done(self.engine, done, worker)
        return len(batch)

    def _invitation_code(self, payload: dict[str, object]) -> list[tuple[str, bytes]]:
        """A visitor's QR code, drawn now from the visit (its secret is derived, never stored)."""
        visit_id = payload.get("qr_visit_id")
        if visit_id is None:
            return []
        with open_session(self.engine) as s:
            visit = s.get(Visit, int(str(visit_id)))
            token = visit_token(visit) if visit is not None else None
        return [("invitation.png", qr.png(token))] if token else []

    def _endpoints(self, ids: list[object]) -> dict[int, tuple[str, str]]:
        wanted = {int(str(i)) for i in ids if i is not None}
        if not wanted:
            return {}
        with open_session(self.engine) as s:
            rows = [s.get(WebhookEndpoint, i) for i in sorted(wanted)]
            return {
                ep.id: (ep.url, channels.unseal(self.settings, ep.secret))
                for ep in rows
                if ep is not None and ep.id is not None and ep.active
            }

    def _failed(self, msg: outbox.Claimed, worker: str, exc: Exception) -> None:
        outbox.mark_failed(
            self.engine, msg, worker, f"{type(exc).__name__}: {exc}", max_attempts=self.settings.delivery_max_attempts
        )
        if msg.attempts >= self.settings.delivery_max_attempts:
            log.error("outbox message %s (%s) parked after %s attempts: %s", msg.id, msg.kind, msg.attempts, exc)


def start_delivery(engine: Engine, settings: Settings, **kwargs: object) -> DeliveryWorker:
    return DeliveryWorker(engine, settings, **kwargs).start()  # type: ignore[arg-type]


def _claimed(row: outbox.OutboxMessage) -> outbox.Claimed:
    return outbox.Claimed(row.id or 0, row.kind, dict(row.payload), row.attempts + 1)
