"""Stand-ins for the ASGI tests: a scope builder, a receive, and sends that keep or drop messages.

Imported as `from asgi_fakes import ...`, the way tests/protocol imports protocol_fakes (pytest puts
a test file's folder on sys.path).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
import orjson


def http_scope(
    path: str = "/v1/chat/completions",
    method: str = "POST",
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """An HTTP scope as a server hands it over; `extra` adds or overrides keys (state, ...)."""
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": list(headers),
        **extra,
    }


async def receive() -> dict[str, Any]:
    """A request with an empty body, already complete."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Any) -> None:
    """A send that drops every message."""


class Collector:
    """A send that keeps every message, in order.

    With `signal`, it sets that event once a message whose body is `signal_on` has been sent:
    an app that waits on the event only goes on after its chunk really left the middleware.
    """

    def __init__(self, signal: anyio.Event | None = None, signal_on: bytes = b"one") -> None:
        self.messages: list[dict[str, Any]] = []
        self.signal = signal
        self.signal_on = signal_on

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.signal is not None and message.get("body") == self.signal_on:
            self.signal.set()

    @property
    def start(self) -> dict[str, Any]:
        return self.messages[0]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.messages[1:])

    @property
    def bodies(self) -> list[bytes | None]:
        """The body of every message after the start, chunk by chunk."""
        return [m.get("body") for m in self.messages[1:]]


def json_response_parts(
    messages: list[dict[str, Any]], status: int
) -> tuple[dict[bytes, bytes], Any]:
    """Checks a whole JSON response (start, then one final body).

    Returns (headers, decoded body).
    """
    start, body = messages
    assert start["status"] == status
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert body["more_body"] is False
    return headers, orjson.loads(body["body"])
