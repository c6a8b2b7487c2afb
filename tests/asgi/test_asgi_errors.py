from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, http_scope, json_response_parts, receive

from asgi.errors import ErrorMiddleware

pytestmark = pytest.mark.anyio

PATH = "/v1/completions"
START = {"type": "http.response.start", "status": 200, "headers": []}


async def test_lifespan_errors_are_not_swallowed() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        raise RuntimeError("startup broke")

    with pytest.raises(RuntimeError):
        await ErrorMiddleware(app)({"type": "lifespan"}, receive, Collector())


async def test_exception_before_start_sends_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        raise ValueError("boom")

    send = Collector()
    scope = http_scope(PATH, request_id="rid-123")
    with caplog.at_level(logging.ERROR, logger="asgi.errors"):
        await ErrorMiddleware(app)(scope, receive, send)  # no raise

    headers, payload = json_response_parts(send.messages, 500)
    assert headers[b"x-request-id"] == b"rid-123"
    assert payload == {
        "error": {
            "message": "Internal server error",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert "rid-123" in caplog.text and "boom" in caplog.text


async def test_500_without_request_id_has_no_header() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        raise ValueError("boom")

    send = Collector()
    await ErrorMiddleware(app)(http_scope(PATH), receive, send)
    assert send.messages[0]["status"] == 500
    assert b"x-request-id" not in dict(send.messages[0]["headers"])


async def test_exception_group_becomes_500() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_fail)

    async def _fail() -> None:
        raise KeyError("x")

    send = Collector()
    await ErrorMiddleware(app)(http_scope(PATH), receive, send)
    assert send.messages[0]["status"] == 500


async def test_exception_after_start_ends_body_without_second_start() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd(START)
        await snd({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise RuntimeError("mid-stream")

    send = Collector()
    await ErrorMiddleware(app)(http_scope(PATH), receive, send)
    assert [m["type"] for m in send.messages] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    assert send.messages[0]["status"] == 200
    assert send.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_exception_after_finished_sends_nothing_more() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd(START)
        await snd({"type": "http.response.body", "body": b"{}", "more_body": False})
        raise RuntimeError("after the end")

    send = Collector()
    await ErrorMiddleware(app)(http_scope(PATH), receive, send)
    assert len(send.messages) == 2


async def test_cancellation_is_not_swallowed() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await anyio.sleep_forever()

    send = Collector()
    with anyio.move_on_after(0.05) as scope:
        await ErrorMiddleware(app)(http_scope(PATH), receive, send)
    assert scope.cancelled_caught
    assert send.messages == []
