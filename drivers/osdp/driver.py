"""The gateway as OSDP control panel (libosdp over pyserial).

One ``Line`` per serial port: one libosdp control panel for every PD (reader, door module, key
cabinet) on that RS-485 line, refreshed by one thread of ours. Everything libosdp does happens on
that thread: its event and completion callbacks run inside ``refresh``, and commands from the
asyncio side cross over through a queue the thread drains before each refresh; answers go back
with ``loop.call_soon_threadsafe``. Nothing of libosdp ever runs on the event loop.

OSDP readers hold no card list. A card read, a PIN typed on the keypad or a QR code (card data in
ASCII) is decided on the line's thread, in the callback that received it, by the ``OnlineDecide``
the composition root lends (the in-memory decision index): a grant pulses the door output, lights
the LED green and beeps short; a refusal lights it red and beeps long. Those commands are queued in
libosdp before the callback returns, so they go out on the next poll of that PD. No decision
function, or one that fails: refused (fail-secure), with the reason in the event.

Grants and revokes are therefore acknowledged without writing anything (the index already knows);
``Unlock`` pulses an output, ``HoldOpen`` holds it on (a `free` window) and the line locks it again
at the window's end by itself.

Inputs: a door contact opening without a grant or a hold is ``forced``; staying open past the pulse
plus ``held_open_seconds`` is ``held_open``; the PD's local tamper is ``tamper``. On a key cabinet
each slot is an output (its lock) and an input (key present): a presentation releases every slot
the person may use now, the key leaving and coming back are ``key_taken``/``key_returned``, and a
key still out when its holder's window has ended is ``key_overdue`` (checked once a second).

Supervision comes from libosdp's own status: a PD online (with its secure channel when it has a
key) is ``online``; one whose bytes still arrive but which libosdp keeps offline (a wrong key, a
collision of two PDs on one address, a corrupted line) is ``degraded``; a silent one is
``offline``. Each change is reported and logged once. A serial port that fails under the line
closes the control panel and every PD of the line goes offline until the port opens again.

The secure-channel key is read from the file the settings name, held in memory only, and never
logged or put in a repr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import osdp_sys  # type: ignore[import-not-found]  # libosdp's C extension, under its Python layer
import serial
from osdp import (  # type: ignore[import-untyped]
    CardFormat,
    CommandLEDColor,
    CompletionStatus,
    Event,
    LibFlag,
    LogLevel,
    PDInfo,
    StatusReportType,
)
from osdp import Command as Cmd

from access.protocol import (
    Availability,
    Command,
    CommandResult,
    ControllerUnavailable,
    DoorEvent,
    FullSync,
    Grant,
    HoldOpen,
    ListUsers,
    OnlineDecide,
    Presentation,
    Report,
    ReportCallback,
    Revoke,
    Unlock,
    UserList,
    Verdict,
)
from drivers.osdp.settings import OsdpSettings

log = logging.getLogger("drivers.osdp")

REFRESH_S = 0.004  # between two libosdp refreshes: a poll cycle is a few of them
ACK_TIMEOUT_S = 3.0
REOPEN_S = 1.0
HEARD_S = 6.0  # a PD heard this recently but kept offline by libosdp is degraded, not silent
RETRY_S = 2.0  # libosdp waits minutes before probing an offline PD again; a door reader should be back sooner
DEGRADED_S = 3.0  # answering this long without coming online: degraded (a handshake takes a fraction of it)
STARTUP_S = 5.0  # after opening the line, PDs still coming up are not reported offline
PIN_IDLE_S = 10.0
PIN_END = {0x0D, ord("#")}
PIN_CLEAR = {0x7F, ord("*")}

# OSDP osdp_OUT control codes (IEC 60839-11-5): 1 permanent off, 2 permanent on, 5 temporary on then back
OUT_OFF, OUT_ON, OUT_PULSE = 1, 2, 5


class Secret:
    """A secure-channel key: bytes that never print."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) != 16:
            raise ValueError("an OSDP secure-channel key has 16 bytes")
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


def read_key(path: str) -> Secret:
    """The key in ``path`` (32 hex digits); the file must be readable by its owner only."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} is readable by others: chmod 600 it")
    with open(path) as f:
        text = f.read().strip()
    try:
        return Secret(bytes.fromhex(text))
    except ValueError:
        raise ValueError(f"{path} does not hold 32 hex digits") from None


def write_key(path: str, key: Secret) -> None:
    """Write a key atomically, owner-only from the first byte."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.reveal().hex() + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class PdConfig:
    key: str  # the controller's key in the gateway
    settings: OsdpSettings


@dataclass
class _Pd:
    config: PdConfig
    index: int
    scbk: Secret | None = None
    state: str = "unknown"
    reason: str = ""
    inputs: bytes = b""
    tamper: bool = False
    pin: list[int] = field(default_factory=list)
    pin_at: float = 0.0
    probed_at: float = 0.0
    down_at: float | None = None  # when libosdp last stopped calling it online
    answering_since: float | None = None  # heard on the wire while libosdp keeps it offline, since
    released_until: dict[int, float] = field(default_factory=dict)  # output -> monotonic end of its pulse
    held: dict[int, float] = field(default_factory=dict)  # output -> monotonic end of its hold-open
    open_since: dict[int, float] = field(default_factory=dict)  # output -> when its contact opened
    alarmed: set[int] = field(default_factory=set)  # outputs whose held-open alarm was raised
    last_grant: dict[int, Presentation] = field(default_factory=dict)  # slot -> who was released last
    keys_out: dict[int, Presentation | None] = field(default_factory=dict)  # slot -> who took the key
    overdue: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def s(self) -> OsdpSettings:
        return self.config.settings


@dataclass
class _Pending:
    command: dict
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    at: float = field(default_factory=time.monotonic)


class _SerialChannel:
    """libosdp's channel over a pyserial port. A failing port must not raise into libosdp's C
    code: the error is kept and the line's thread closes the panel."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.error: BaseException | None = None
        self.heard: dict[int, float] = {}  # PD address -> when a frame from it was last seen
        self._tail = b""
        self.id = 0

    def read(self, max_bytes: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            waiting = self.port.in_waiting
            data = self.port.read(min(max_bytes, waiting)) if waiting else b""
        except Exception as exc:  # SerialException, OSError: the port went away
            self.error = exc
            return b""
        if data:
            self._note(data)
        return bytes(data)

    def _note(self, data: bytes) -> None:
        # An OSDP frame starts with SOM 0x53 then the address; a reply has the top bit set.
        buf = self._tail + data
        now = time.monotonic()
        for i in range(len(buf) - 1):
            if buf[i] == 0x53 and buf[i + 1] & 0x80:
                self.heard[buf[i + 1] & 0x7F] = now
        self._tail = buf[-1:]

    def write(self, buf: bytes) -> int:
        if self.error is not None:
            return -1
        try:
            return int(self.port.write(buf) or 0)
        except Exception as exc:
            self.error = exc
            return -1

    def flush(self) -> None:
        if self.error is None:
            try:
                self.port.reset_input_buffer()
            except Exception as exc:
                self.error = exc


def card_value(s: OsdpSettings, fmt: int, bits: int, data: bytes) -> tuple[str, str, tuple[str, ...]] | None:
    """A card read as (presentation kind, value, spellings); None if it cannot be one."""

    if fmt == CardFormat.ASCII:
        text = data.decode("utf-8", "replace").strip()
        return ("qr", text, ("hex",)) if text else None
    if bits <= 0 or len(data) * 8 < bits:
        return None
    if s.card_data == "wiegand" or fmt == CardFormat.Wiegand:
        number = int.from_bytes(data, "big") >> (len(data) * 8 - bits)
        if bits in (26, 34):  # drop the leading and trailing parity bits
            number = (number >> 1) & ((1 << (bits - 2)) - 1)
        return ("badge", str(number), ("decimal",))
    if bits % 8:
        return None
    data = data[: bits // 8]
    if len(data) > 10 and all(0x20 <= b < 0x7F for b in data):  # longer than any card serial, and text: a QR code
        return ("qr", data.decode("ascii"), ("hex",))
    return ("badge", data.hex(), ("hex", "hex_compact"))


class Line:
    """One serial port and every PD on it, driven by one thread."""

    def __init__(self, port: str, baud: int, pds: Sequence[PdConfig], driver: OsdpDriver) -> None:
        self.port_name = port
        self.baud = baud
        self.driver = driver
        self.pds = [_Pd(c, i) for i, c in enumerate(pds)]
        self.by_key = {p.key: p for p in self.pds}
        self.inbox: queue.Queue[tuple[str, _Pending]] = queue.Queue()
        self.pending: dict[int, list[_Pending]] = {p.index: [] for p in self.pds}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cp: Any = None
        self._channel: _SerialChannel | None = None
        self._serial: Any = None
        self._port_error = ""
        self._last_tick = 0.0
        self._opened_at = 0.0

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"osdp {self.port_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._cp is None and not self._open():
                self._stop.wait(REOPEN_S)
                continue
            try:
                self._drain()
                self._cp.refresh()
                if self._channel is not None and self._channel.error is not None:
                    self._lost(self._channel.error)
                    continue
                self._supervise()
                self._tick()
            except Exception:  # a bug here must not kill the line: log it, keep polling
                log.exception("OSDP line %s: refresh failed", self.port_name)
            time.sleep(REFRESH_S)

    def _open(self) -> bool:
        try:
            self._serial = serial.Serial(self.port_name, self.baud, timeout=0, write_timeout=1)
        except Exception as exc:
            self._set_all("offline", f"serial port: {exc}", once_key=str(exc))
            return False
        self._channel = _SerialChannel(self._serial)
        infos = []
        for pd in self.pds:
            flags = [LibFlag.EnableNotification]
            if pd.scbk is not None:  # install mode: SCBK-D first (libosdp then sets the key), never plain
                flags.append(LibFlag.InstallMode if pd.s.install_mode else LibFlag.EnforceSecure)
            info = PDInfo(pd.s.address, self._channel, scbk=pd.scbk.reveal() if pd.scbk else None, flags=flags)
            info.name = pd.key[:16]
            infos.append(info.get())
        osdp_sys.set_loglevel(LogLevel.Error if log.isEnabledFor(logging.DEBUG) else LogLevel.Emergency)
        cp = osdp_sys.ControlPanel(infos)
        cp.set_event_callback(self._on_event)
        cp.set_command_completion_callback(self._on_completion)
        self._cp = cp
        self._port_error = ""
        self._opened_at = time.monotonic()
        log.info("OSDP line %s open at %d baud: %s", self.port_name, self.baud, ", ".join(p.key for p in self.pds))
        return True

    def _lost(self, exc: BaseException) -> None:
        log.warning("OSDP line %s: serial port failed (%s); reopening", self.port_name, exc)
        self._close()
        self._set_all("offline", f"serial port lost: {exc}")

    def _close(self) -> None:
        self._cp = None
        for pd in self.pds:
            for p in self.pending[pd.index]:
                self._settle(p, False, "serial line closed")
            self.pending[pd.index] = []
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception as exc:  # closing a port that is already gone
                log.debug("closing %s: %s", self.port_name, exc)
        self._serial = None
        self._channel = None

    # ------------------------------------------------------------------ commands

    def submit(self, pd: _Pd, command: dict, future: asyncio.Future | None = None, loop=None) -> bool:
        """On the line's thread only (from a callback or the inbox)."""
        pending = _Pending(command, future, loop)
        if self._cp is None or not self._cp.submit_command(pd.index, command):
            self._settle(pending, False, "libosdp refused the command (PD offline?)")
            return False
        self.pending[pd.index].append(pending)
        return True

    def _drain(self) -> None:
        while True:
            try:
                key, pending = self.inbox.get_nowait()
            except queue.Empty:
                return
            pd = self.by_key[key]
            if pd.state not in ("online",):
                self._settle(pending, False, f"{key} is {pd.state}: {pd.reason or 'not answering'}")
                continue
            self._apply_hold(pd, pending.command)
            self.submit(pd, pending.command, pending.future, pending.loop)

    def _apply_hold(self, pd: _Pd, command: dict) -> None:
        """Remember holds and pulses, so a door contact opening under them is not forced."""
        out = command.get("output_no", -1) + 1
        code = command.get("control_code")
        until = command.pop("_until", None)
        if code == OUT_ON:
            pd.held[out] = until if until is not None else float("inf")
        elif code == OUT_OFF:
            pd.held.pop(out, None)
        elif code == OUT_PULSE:
            pd.released_until[out] = time.monotonic() + command["timer_count"] / 10

    def _on_completion(self, pd_index: int, command: dict, status: int) -> None:
        queue_ = self.pending.get(pd_index) or []
        for i, p in enumerate(queue_):
            if p.command.get("command") == command.get("command"):
                del queue_[i]
                self._settle(
                    p, status == CompletionStatus.Ok, "" if status == CompletionStatus.Ok else f"status {status}"
                )
                return

    def _settle(self, p: _Pending, ok: bool, detail: str) -> None:
        if p.future is None or p.loop is None:
            return
        future = p.future

        def done() -> None:
            if not future.done():
                future.set_result((ok, detail))

        try:
            p.loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    # ------------------------------------------------------------------ events (inside refresh)

    def _on_event(self, pd_index: int, event: dict) -> int:
        try:
            self._event(self.pds[pd_index], event)
        except Exception:  # an odd frame must never propagate into libosdp
            log.exception("OSDP %s: event %s not handled", self.pds[pd_index].key, event.get("event"))
        return 0

    def _event(self, pd: _Pd, event: dict) -> None:
        kind = event.get("event")
        if kind == Event.CardRead:
            read = card_value(pd.s, event.get("format", 0), int(event.get("length", 0)), bytes(event.get("data", b"")))
            if read is None:
                log.warning("OSDP %s: unreadable card data (%d bits)", pd.key, event.get("length", 0))
                return
            self._present(pd, *read)
        elif kind == Event.KeyPress:
            self._keys(pd, bytes(event.get("data", b"")))
        elif kind == Event.Status and event.get("type") == StatusReportType.Input:
            self._inputs(pd, bytes(event.get("report", b"")))
        elif kind == Event.Status and event.get("type") == StatusReportType.Local:
            report = bytes(event.get("report", b""))
            tamper = bool(report[:1] and report[0])
            if tamper and not pd.tamper:
                self._door_event(pd, "tamper", None, None, {"input": "local tamper"})
            pd.tamper = tamper

    def _keys(self, pd: _Pd, data: bytes) -> None:
        now = time.monotonic()
        if pd.pin and now - pd.pin_at > PIN_IDLE_S:
            pd.pin.clear()
        pd.pin_at = now
        for b in data:
            if b in PIN_CLEAR:
                pd.pin.clear()
            elif b in PIN_END:
                digits = "".join(chr(d) for d in pd.pin)
                pd.pin.clear()
                if digits:
                    self._present(pd, "pin", digits, ("hex",))
            elif chr(b).isdigit() and len(pd.pin) < 16:
                pd.pin.append(b)

    def _present(self, pd: _Pd, kind: str, value: str, spellings: tuple[str, ...]) -> None:
        """Decide now and answer the reader in this poll cycle."""

        at = datetime.now(UTC)
        outputs = sorted(pd.s.key_slots) if pd.s.key_slots else [pd.s.door_output]
        verdicts = [(out, self.driver.decide(Presentation(pd.key, out, kind, value, at, spellings))) for out in outputs]
        granted = [(out, v) for out, v in verdicts if v.allowed]
        pulse = pd.s.pulse_seconds * 10
        for out, _ in granted:
            command = {"command": Cmd.Output, "output_no": out - 1, "control_code": OUT_PULSE, "timer_count": pulse}
            self._apply_hold(pd, command)
            self.submit(pd, command)
            if pd.s.key_slots:
                pd.last_grant[out] = Presentation(pd.key, out, kind, value, at, spellings)
        ok = bool(granted)
        self.submit(
            pd,
            {
                "command": Cmd.LED,
                "reader": 0,
                "led_number": 0,
                "control_code": 2,
                "on_count": 10 if ok else 5,
                "off_count": 0 if ok else 5,
                "on_color": CommandLEDColor.Green if ok else CommandLEDColor.Red,
                "off_color": CommandLEDColor.Black,
                "timer_count": 20,
                "temporary": True,
            },
        )
        self.submit(
            pd,
            {
                "command": Cmd.Buzzer,
                "reader": 0,
                "control_code": 2,
                "on_count": 1 if ok else 10,
                "off_count": 0,
                "rep_count": 1,
            },
        )
        for out, v in granted or verdicts[:1]:
            raw: dict[str, Any] = {"reason": v.reason, "decided_by": "gateway", "credential_kind": kind}
            self._door_event(pd, "granted" if v.allowed else "denied", value, out, raw, spellings)

    def _inputs(self, pd: _Pd, report: bytes) -> None:
        first, before = not pd.inputs, pd.inputs
        pd.inputs = report
        now = time.monotonic()

        def was(n: int) -> bool:
            return 0 < n <= len(before) and bool(before[n - 1])

        def is_(n: int) -> bool:
            return 0 < n <= len(report) and bool(report[n - 1])

        if first:  # the first report after (re)connecting is the baseline, not a change
            pd.open_since.update({out: now for out, inp in pd.s.contacts.items() if is_(inp)})
            for slot, inp in pd.s.key_slots.items():
                if not is_(inp):
                    pd.keys_out.setdefault(slot, None)
            return
        for out, inp in pd.s.contacts.items():
            if is_(inp) and not was(inp):
                pd.open_since[out] = now
                pd.alarmed.discard(out)
                if not (pd.released_until.get(out, 0) > now or pd.held.get(out, 0) > now):
                    self._door_event(pd, "forced", None, out, {"input": inp})
            elif was(inp) and not is_(inp):
                pd.open_since.pop(out, None)
        for slot, inp in pd.s.key_slots.items():
            if was(inp) and not is_(inp):
                who = pd.last_grant.pop(slot, None)
                pd.keys_out[slot] = who
                if who is None or pd.released_until.get(slot, 0) <= now:  # the slot was not released for this
                    self._door_event(pd, "forced", None, slot, {"input": inp, "slot": slot})
                self._key_event(pd, "key_taken", who, slot, {"slot": slot})
            elif is_(inp) and not was(inp):
                who = pd.keys_out.pop(slot, None)
                pd.overdue.discard(slot)
                self._key_event(pd, "key_returned", who, slot, {"slot": slot})

    def _key_event(self, pd: _Pd, kind: str, who: Presentation | None, slot: int, raw: dict[str, Any]) -> None:
        if who is None:
            self._door_event(pd, kind, None, slot, raw)
            return
        raw["credential_kind"] = who.kind
        self._door_event(pd, kind, who.value, slot, raw, who.spellings)

    def _tick(self) -> None:
        """Once a second: holds that end, doors held open too long, keys overdue."""
        now = time.monotonic()
        if now - self._last_tick < 1.0:
            return
        self._last_tick = now

        for pd in self.pds:
            if pd.state != "online":
                continue
            for out, until in list(pd.held.items()):
                if until <= now:
                    pd.held.pop(out, None)
                    self.submit(
                        pd, {"command": Cmd.Output, "output_no": out - 1, "control_code": OUT_OFF, "timer_count": 0}
                    )
                    log.info("OSDP %s: output %d locked again at the end of its hold", pd.key, out)
            for out, since in list(pd.open_since.items()):
                allowed = max(pd.released_until.get(out, since), since) + pd.s.held_open_seconds
                if out not in pd.alarmed and pd.held.get(out, 0) <= now and now >= allowed:
                    pd.alarmed.add(out)
                    self._door_event(pd, "held_open", None, out, {"open_s": round(now - since)})
            for slot, who in list(pd.keys_out.items()):
                if slot in pd.overdue or who is None:
                    continue
                verdict = self.driver.decide(
                    Presentation(who.controller_key, slot, who.kind, who.value, datetime.now(UTC), who.spellings)
                )
                if not verdict.allowed:
                    pd.overdue.add(slot)
                    self._key_event(pd, "key_overdue", who, slot, {"slot": slot, "reason": verdict.reason})

    # ------------------------------------------------------------------ supervision

    def _supervise(self) -> None:
        cp = self._cp
        online, sc = cp.status(), cp.sc_status()
        heard = self._channel.heard if self._channel else {}
        now = time.monotonic()
        for pd in self.pds:
            bit = 1 << pd.index
            if online & bit and (pd.scbk is None or sc & bit):
                state, reason = "online", "secure channel up" if pd.scbk else "online without secure channel"
                pd.answering_since = pd.down_at = None
            elif (
                (pd.down_at is not None or self._down(pd, now))
                and now - heard.get(pd.s.address, -1e9) < HEARD_S
                and heard.get(pd.s.address, 0) > (pd.down_at or 0)
            ):
                if pd.answering_since is None:
                    pd.answering_since = now
                if now - pd.answering_since >= DEGRADED_S:
                    state, reason = (
                        "degraded",
                        "answers but is refused (wrong key?) or garbled (two PDs on its address?)",
                    )
                else:  # a PD coming back answers a few polls before its secure channel is up
                    state, reason = (pd.state, pd.reason) if pd.state != "online" else ("offline", "not answering")
            else:
                self._down(pd, now)
                pd.answering_since = None
                state, reason = "offline", "not answering"
            if state != "online" and now - max(pd.probed_at, pd.down_at or now) > RETRY_S:
                pd.probed_at = now
                cp.disable_pd(pd.index)  # restart libosdp's state machine for it: probe it now
                cp.enable_pd(pd.index)
            if state != "online" and pd.state == "unknown" and now - self._opened_at < STARTUP_S:
                continue  # still coming up (the secure channel takes a few polls): not a change to report
            self._set(pd, state, reason)
            if state != "online" and self.pending[pd.index]:
                stale = [p for p in self.pending[pd.index] if now - p.at > ACK_TIMEOUT_S]
                for p in stale:
                    self.pending[pd.index].remove(p)
                    self._settle(p, False, f"{pd.key} {state}: {reason}")

    @staticmethod
    def _down(pd: _Pd, now: float) -> bool:
        """Note when the PD stopped being online (only what is heard after that says it answers)."""
        if pd.down_at is None:
            pd.down_at = now
        return True

    def _set_all(self, state: str, reason: str, once_key: str = "") -> None:
        if once_key and once_key == self._port_error:
            return
        self._port_error = once_key
        for pd in self.pds:
            self._set(pd, state, reason)

    def _set(self, pd: _Pd, state: str, reason: str) -> None:
        if state == pd.state:
            return
        previous, pd.state, pd.reason = pd.state, state, reason
        (log.info if state == "online" else log.warning)("OSDP %s: %s (%s)", pd.key, state, reason)
        if state == "online" and previous != "unknown" and pd.s.install_mode:
            log.info("OSDP %s: keyed; set install_mode: false in the site file", pd.key)
        if state == "online" and pd.inputs:
            pd.inputs = b""  # the PD re-reports its inputs; do not mistake them for changes
        if state == "online":  # readers hold no cards, but a held-open door must be held again after a restart
            for out, until in pd.held.items():
                if until > time.monotonic():
                    self.submit(
                        pd, {"command": Cmd.Output, "output_no": out - 1, "control_code": OUT_ON, "timer_count": 0}
                    )
        availability = Availability(pd.key, state == "online", datetime.now(UTC), reason, degraded=state == "degraded")
        self.driver.report(availability, state, reason)

    def _door_event(
        self,
        pd: _Pd,
        kind: str,
        uid: str | None,
        output: int | None,
        raw: dict[str, Any],
        spellings: tuple[str, ...] = ("hex",),
    ) -> None:
        raw.setdefault("via", "osdp")
        event = DoorEvent(pd.key, kind, uid, output, datetime.now(UTC), raw, spellings)  # type: ignore[arg-type]
        self.driver.report(event)


class OsdpDriver:
    """Every OSDP PD of the gateway, one ``Line`` per serial port."""

    def __init__(self, pds: Sequence[PdConfig], decide: OnlineDecide | None = None) -> None:
        self._decide = decide
        self._callbacks: list[ReportCallback] = []
        self._lock = threading.Lock()
        self.states: dict[str, tuple[str, str]] = {}
        keys: dict[str, Secret | None] = {}
        for pd in pds:
            try:
                keys[pd.key] = self._key_for(pd)
            except (OSError, ValueError) as exc:  # a missing, loose or garbled key file: that PD only
                log.warning("OSDP %s not driven: its key file cannot be used (%s)", pd.key, exc)
        by_port: dict[str, list[PdConfig]] = {}
        for pd in pds:
            if pd.key in keys:
                by_port.setdefault(pd.settings.port, []).append(pd)
        self.lines: list[Line] = []
        for port, configs in by_port.items():
            bauds = {c.settings.baud for c in configs}
            if len(bauds) > 1:
                log.warning("OSDP line %s: PDs disagree on the baud rate %s; using the first", port, sorted(bauds))
            self.lines.append(Line(port, configs[0].settings.baud, configs, self))
        self._line_of = {pd.key: line for line in self.lines for pd in line.pds}
        for line in self.lines:
            for member in line.pds:
                member.scbk = keys[member.key]

    @staticmethod
    def _key_for(config: PdConfig) -> Secret | None:
        s = config.settings
        if not s.scbk_file:
            log.warning("OSDP %s: no scbk_file, plain OSDP without a secure channel", config.key)
            return None
        if not os.path.exists(s.scbk_file) and s.install_mode:
            key = Secret(secrets.token_bytes(16))
            write_key(s.scbk_file, key)
            log.warning("OSDP %s: install mode, a new key was written to %s", config.key, s.scbk_file)
            return key
        return read_key(s.scbk_file)

    def keys(self) -> list[str]:
        return list(self._line_of)

    def state(self, key: str) -> tuple[str, str]:
        """(state, reason) of one PD: online, degraded, offline or unknown."""
        return self.states.get(key, ("unknown", ""))

    @property
    def connected(self) -> bool:
        return True  # a serial line has no session to wait for; PDs report their own state

    # ------------------------------------------------------------------ decisions and reports

    def decide(self, p: Presentation) -> Verdict:
        if self._decide is None:
            return Verdict(False, "no_decision_data")
        try:
            return self._decide(p)
        except Exception:
            log.exception("online decision failed for %s: refused", p.controller_key)
            return Verdict(False, "decision_failed")

    def report(self, report: Report, state: str | None = None, reason: str = "") -> None:
        if state is not None:
            self.states[getattr(report, "controller_key", "")] = (state, reason)
        for cb in list(self._callbacks):
            try:
                cb(report)
            except Exception:
                log.exception("an OSDP report callback failed")

    def subscribe(self, callback: ReportCallback) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def stale_controllers(self, now: datetime) -> list[str]:
        return [key for key, (state, _) in self.states.items() if state == "offline"]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for line in self.lines:
            line.start()

    def stop(self) -> None:
        for line in self.lines:
            line.stop()

    # ------------------------------------------------------------------ commands

    async def send(self, controller_key: str, command: Command) -> CommandResult:
        line = self._line_of.get(controller_key)
        if line is None:
            raise KeyError(controller_key)
        cid = command.command_id
        if isinstance(command, Grant | Revoke | FullSync):
            return CommandResult(cid, True, "OSDP readers hold no card list: decided online at each presentation")
        if isinstance(command, ListUsers):
            self.report(UserList(controller_key, frozenset(), datetime.now(UTC)))
            return CommandResult(cid, True, "OSDP readers hold no card list")

        if isinstance(command, Unlock):
            osdp_cmd: dict[str, Any] = {
                "command": Cmd.Output,
                "output_no": command.door_output - 1,
                "control_code": OUT_PULSE,
                "timer_count": min(command.seconds * 10, 0xFFFF),
            }
        elif isinstance(command, HoldOpen):
            on = command.until is not None and command.until > datetime.now(UTC)
            osdp_cmd = {
                "command": Cmd.Output,
                "output_no": command.door_output - 1,
                "control_code": OUT_ON if on else OUT_OFF,
                "timer_count": 0,
            }
            if on and command.until is not None:
                osdp_cmd["_until"] = time.monotonic() + (command.until - datetime.now(UTC)).total_seconds()
        else:
            return CommandResult(cid, False, f"OSDP cannot carry {type(command).__name__}")
        if line._cp is None:
            raise ControllerUnavailable(f"OSDP line {line.port_name} is not open", controller_key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        line.inbox.put((controller_key, _Pending(osdp_cmd, future, loop)))
        try:
            ok, detail = await asyncio.wait_for(future, ACK_TIMEOUT_S)
        except TimeoutError:
            return CommandResult(cid, False, "no acknowledgement from the PD in time", 1)
        return CommandResult(cid, ok, detail or "acknowledged by the PD", 1)
