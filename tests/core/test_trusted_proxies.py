"""X-Forwarded-For is believed only from BOOKGATE_TRUSTED_PROXIES: by default, from nobody."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvicorn

from bookgate import cli
from config import Settings


async def _echo_client(scope, receive, send):  # type: ignore[no-untyped-def]
    body = scope["client"][0].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _client_seen(options: dict, peer: str, forwarded_for: str) -> str:
    """What the app sees as the client address, served by uvicorn's app stack built with `options`."""
    config = uvicorn.Config(_echo_client, **options)
    config.load()
    sent: list[dict] = []

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gate"), (b"x-forwarded-for", forwarded_for.encode())],
        "client": (peer, 51000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(config.loaded_app(scope, receive, send))
    return sent[-1]["body"].decode()


def test_by_default_no_proxy_header_is_believed(monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    options = cli.proxy_options(Settings(_env_file=None))  # type: ignore[call-arg]
    assert options["proxy_headers"] is False
    # even from 127.0.0.1, which uvicorn trusts out of the box
    assert _client_seen(options, "127.0.0.1", "6.6.6.6") == "127.0.0.1"
    assert _client_seen({}, "127.0.0.1", "6.6.6.6") == "6.6.6.6"  # what uvicorn's defaults would do


def test_a_configured_proxy_is_believed_and_only_it(monkeypatch):
    monkeypatch.setenv("BOOKGATE_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16")
    options = cli.proxy_options(Settings(_env_file=None))  # type: ignore[call-arg]
    assert options == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5", "10.1.0.0/16"]}
    assert _client_seen(options, "10.0.0.5", "203.0.113.7") == "203.0.113.7"
    assert _client_seen(options, "10.1.2.3", "203.0.113.7") == "203.0.113.7"
    assert _client_seen(options, "127.0.0.1", "6.6.6.6") == "127.0.0.1"


@pytest.mark.parametrize("trusted", ["", "10.0.0.5"])
def test_serve_hands_the_setting_to_uvicorn(monkeypatch, tmp_path, trusted):
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    monkeypatch.setattr("bookgate.app.create_app", lambda settings: object())
    settings = Settings(_env_file=None, var_dir=tmp_path, trusted_proxies=trusted)  # type: ignore[call-arg]
    assert cli.cmd_serve(argparse.Namespace(host=None, port=None), settings) == 0
    assert seen["proxy_headers"] is bool(trusted)
    assert seen["forwarded_allow_ips"] == ([trusted] if trusted else "")
