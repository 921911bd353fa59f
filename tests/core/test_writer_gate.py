"""SQLite's writer gate among processes: a second process (here a second engine on the same file,
whose flock is as separate as another process's) waits for the first's write to end, and takes
the write at once when it does, instead of meeting it at SQLite's sleeping busy handler."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from sqlalchemy import text

from core.db import WriterGate, make_engine, write_admission, write_session


def test_two_gates_on_one_file_exclude_each_other_and_hand_over(tmp_path):
    path = str(tmp_path / "db.sqlite.writer")
    first, second = WriterGate(path), WriterGate(path)
    assert first.acquire(timeout=1)
    assert not second.acquire(timeout=0.05)  # the other "process" writes
    assert not second.acquire(blocking=False)
    took: list[float] = []

    def wait() -> None:
        assert second.acquire(timeout=5)
        took.append(time.monotonic())
        second.release()

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    released = time.monotonic()
    first.release()
    t.join(5)
    assert took and took[0] >= released  # handed over once released (how fast: bench.booking_http)
    assert first.acquire(blocking=False)
    first.release()


def test_an_engine_write_holds_the_file_lock_another_process_sees(tmp_path):
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    engine = make_engine(url)
    assert isinstance(write_admission(engine), WriterGate)
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    print('held')\n"
        "else:\n    print('free')\n"
    )
    lock_file = str(tmp_path / "gate.db") + ".writer"

    def other_process_sees() -> str:
        return subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True, text=True).stdout.strip()

    with write_session(engine) as s:
        s.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"
    assert os.stat(lock_file).st_mode & 0o077 == 0
    engine.dispose()
