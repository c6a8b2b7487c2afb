from __future__ import annotations

from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, http_scope, json_response_parts

from asgi.body_limits import BodyLimitMiddleware

pytestmark = pytest.mark.anyio


def chunks(*parts: bytes, delay: float = 0.0):
    """A receive that sends `parts` as one body, pausing `delay` s before each, then waits."""
    queue = list(parts)

    async def receive() -> dict[str, Any]:
        if not queue:
            await anyio.sleep_forever()
        await anyio.sleep(delay)
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    return receive


class EchoApp:
    """Reads the body the way the router does and answers with it."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        message = await receive()
        assert message["more_body"] is False
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"], "more_body": False})


async def test_a_body_in_pieces_reaches_the_app_whole() -> None:
    app = EchoApp()
    send = Collector()
    await BodyLimitMiddleware(app, max_bytes=10, timeout_s=5)(
        http_scope(), chunks(b"ab", b"cd", b"ef"), send
    )
    assert send.start["status"] == 200 and send.body == b"abcdef"


@pytest.mark.parametrize(
    ("headers", "parts"),
    [
        ([(b"content-length", b"11")], (b"x",)),  # refused on the declared length, unread
        ([], (b"123456", b"78901")),  # no length declared: refused once it grows past
    ],
)
async def test_a_body_over_the_limit_is_a_413(headers: list, parts: tuple) -> None:
    app = EchoApp()
    send = Collector()
    await BodyLimitMiddleware(app, max_bytes=10, timeout_s=5)(
        http_scope(headers=headers), chunks(*parts), send
    )
    response_headers, body = json_response_parts(send.messages, 413)
    assert body["error"]["code"] == 413 and "10 bytes" in body["error"]["message"]
    assert response_headers[b"connection"] == b"close" and not app.called


async def test_a_body_that_comes_too_slowly_is_a_408() -> None:
    app = EchoApp()
    send = Collector()
    await BodyLimitMiddleware(app, max_bytes=100, timeout_s=0.2)(
        http_scope(), chunks(b"a", b"b", b"c", delay=0.15), send
    )
    _, body = json_response_parts(send.messages, 408)
    assert body["error"]["type"] == "RequestTimeoutError" and not app.called


async def test_a_client_gone_before_its_body_ends_gets_nothing() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    app = EchoApp()
    send = Collector()
    await BodyLimitMiddleware(app, max_bytes=10, timeout_s=5)(http_scope(), receive, send)
    assert send.messages == [] and not app.called


async def test_after_the_body_receive_reaches_the_server_again() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])  # the router's disconnect watch

    messages = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    await BodyLimitMiddleware(app, max_bytes=10, timeout_s=5)(http_scope(), receive, Collector())
    assert seen == ["http.request", "http.disconnect"]


async def test_the_rest_of_a_refused_body_is_read_and_dropped() -> None:
    # A client uploading a large body reads the answer only after sending it all: the server
    # must take the rest in, or the 413 is lost to a connection reset.
    parts = [b"x" * 8, b"x" * 8, b"x" * 8]
    received: list[bytes] = []
    source = chunks(*parts)

    async def receive() -> dict[str, Any]:
        message = await source()
        received.append(message["body"])
        return message

    send = Collector()
    await BodyLimitMiddleware(EchoApp(), max_bytes=10, timeout_s=5)(
        http_scope(headers=[(b"content-length", b"24")]), receive, send
    )
    assert send.start["status"] == 413 and received == parts
