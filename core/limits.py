"""Request body limits, enforced before any route (or authentication) reads the body.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted as it
streams and cut off when it passes the limit. Either way the answer is 413 ``too_large`` in
the API's error shape, and nothing larger than the limit is ever held in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_LIMIT = 256 * 1024  # JSON and forms: a booking, a site's rules, a sign-in


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its limit (an HTTPException, so that
    FastAPI's body parsing lets it through as the 413 it is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over {limit} bytes")


class BodyLimit:
    """ASGI middleware: ``limits`` are (path pattern, bytes) pairs, the first full match wins."""

    def __init__(self, app: ASGIApp, limits: Sequence[tuple[str, int]] = (), default: int = DEFAULT_LIMIT) -> None:
        self.app = app
        self.limits = [(re.compile(pattern), limit) for pattern, limit in limits]
        self.default = default

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.limits:
            if pattern.fullmatch(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, 400, "bad_content_length", "Content-Length is not a number")
                    return
                if declared > limit:
                    await _refuse(send, 413, "too_large", f"the body is over {limit} bytes")
                    return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, "too_large", f"the body is over {limit} bytes")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
