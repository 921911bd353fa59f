"""`make run` as a user meets it: `bookgate demo` in its own process, then sign in with a printed password."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.harness import free_port

BIN = Path(sys.executable).with_name("bookgate")


def _start_demo(tmp_path: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")}
    env |= {"BOOKGATE_VAR_DIR": str(tmp_path / "var"), "BOOKGATE_PORT": str(port)}
    proc = subprocess.Popen(
        [str(BIN), "demo"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line and proc.poll() is not None:
            raise AssertionError("demo exited:\n" + "".join(lines))
        lines.append(line)
        if "Bookgate portal:" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("demo did not print its URL:\n" + "".join(lines))


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready")


def test_demo_serves_the_example_site_with_printed_accounts(tmp_path):
    port = free_port()
    proc, lines = _start_demo(tmp_path, port)
    try:
        accounts = dict(
            (m.group(2), (m.group(1), m.group(3)))
            for m in (re.match(r"\s+(\w+)\s+(\S+@\S+)\s+(\S+)$", ln.rstrip("\n")) for ln in lines)
            if m
        )
        assert {role for role, _ in accounts.values()} == {"admin", "venue_manager", "reception", "resident"}
        base = f"http://127.0.0.1:{port}"
        assert f"Bookgate portal: {base}/" in "".join(lines)
        _wait_ready(base)
        email = next(e for e, (role, _) in accounts.items() if role == "resident")
        password = accounts[email][1]
        # The portal sign-in works with the printed password...
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            page = browser.post("/login", data={"email": email, "password": password})
            assert page.status_code == 200 and "Tennis court 1" in page.text
        # ...and so does the API, where the demo resident can book a court.
        token = httpx.post(base + "/api/v1/auth/token", data={"username": email, "password": password}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        resources = httpx.get(base + "/api/v1/resources", headers=headers).json()
        assert {"court-1", "court-2", "meeting-room", "party-room", "visitor-parking"} <= {r["key"] for r in resources}
        assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
        # The embedded broker runs, with a simulated controller online for each esp-rfid controller.
        broker = re.search(r"embedded MQTT broker\s+(mqtt://\S+)", "".join(lines)).group(1)  # type: ignore[union-attr]
        assert _online_controllers(broker) == {"entrance", "courts", "rooms"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # A second start prints new passwords: the old ones no longer work.
    proc2, _ = _start_demo(tmp_path, port)
    try:
        _wait_ready(f"http://127.0.0.1:{port}")
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token", data={"username": email, "password": password})
        assert r.status_code == 401
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)


def _online_controllers(url: str) -> set[str]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = url.removeprefix("mqtt://").split(":")
    online: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe("bookgate/les-tilleuls/+/avty")
    client.on_message = lambda _c, _u, m: m.payload == b"online" and online.add(m.topic.split("/")[2])
    client.connect(host, int(port))
    client.loop_start()
    deadline = time.monotonic() + 20
    while len(online) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    client.loop_stop()
    client.disconnect()
    return online


def test_sim_command_runs_controllers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")}
    r = subprocess.run(
        [str(BIN), "sim", "esprfid", "--mqtt-url", "mqtt://127.0.0.1:1", "--topic", "x/y"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "127.0.0.1:1" in (r.stdout + r.stderr)


def test_admin_create_from_stdin(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGATE_")}
    env["BOOKGATE_VAR_DIR"] = str(tmp_path / "var")
    ok = subprocess.run(
        [str(BIN), "admin", "create", "--email", "root@example.com", "--password-stdin"],
        input="a-strong-password\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run(
        [str(BIN), "admin", "create", "--email", "root@example.com", "--password-stdin"],
        input="a-strong-password\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "exists" in again.stderr
    short = subprocess.run(
        [str(BIN), "admin", "create", "--email", "x@example.com", "--password-stdin"],
        input="short\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert short.returncode == 2 and "password" in short.stderr
