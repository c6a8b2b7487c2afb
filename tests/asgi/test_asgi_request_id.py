from __future__ import annotations

import re
from typing import Any

import pytest
from asgi_fakes import Collector, http_scope, receive

from asgi.request_id import RequestIdMiddleware

pytestmark = pytest.mark.anyio


def models_scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return http_scope("/v1/models", "GET", headers or ())


async def run(
    scope: dict[str, Any], app_headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (the scope the inner app saw, the messages sent to the server)."""
    seen: list[dict[str, Any]] = []

    async def app(inner_scope: Any, rcv: Any, snd: Any) -> None:
        seen.append(inner_scope)
        await snd({"type": "http.response.start", "status": 200, "headers": app_headers or []})
        await snd({"type": "http.response.body", "body": b"{}", "more_body": False})

    send = Collector()
    await RequestIdMiddleware(app)(scope, receive, send)
    return seen[0], send.messages


def response_ids(sent: list[dict[str, Any]]) -> list[bytes]:
    return [v for k, v in sent[0]["headers"] if k == b"x-request-id"]


async def test_client_id_is_echoed_and_put_in_scope() -> None:
    scope = models_scope([(b"x-request-id", b"client-abc.123")])
    inner, sent = await run(scope)
    assert inner["request_id"] == "client-abc.123"
    assert response_ids(sent) == [b"client-abc.123"]
    assert "request_id" not in scope  # the server's scope was copied, not mutated


async def test_id_is_generated_when_missing() -> None:
    inner, sent = await run(models_scope())
    assert re.fullmatch(r"[0-9a-f]{32}", inner["request_id"])
    assert response_ids(sent) == [inner["request_id"].encode()]


@pytest.mark.parametrize(
    "bad", [b"", b"has space", b"x" * 257, b"tab\there", "caf\u00e9".encode("latin-1")]
)
async def test_unacceptable_client_id_is_replaced(bad: bytes) -> None:
    inner, sent = await run(models_scope([(b"x-request-id", bad)]))
    assert re.fullmatch(r"[0-9a-f]{32}", inner["request_id"])
    assert response_ids(sent) == [inner["request_id"].encode()]


async def test_256_chars_is_accepted() -> None:
    inner, _ = await run(models_scope([(b"x-request-id", b"a" * 256)]))
    assert inner["request_id"] == "a" * 256


async def test_existing_response_header_is_replaced() -> None:
    app_headers = [(b"content-type", b"application/json"), (b"X-Request-Id", b"stale")]
    _, sent = await run(models_scope([(b"x-request-id", b"fresh")]), app_headers)
    headers = sent[0]["headers"]
    assert (b"content-type", b"application/json") in headers
    assert [v for k, v in headers if k.lower() == b"x-request-id"] == [b"fresh"]
    assert app_headers[1] == (b"X-Request-Id", b"stale")  # the app's list wasn't edited


async def test_each_request_gets_its_own_id() -> None:
    first, _ = await run(models_scope())
    second, _ = await run(models_scope())
    assert first["request_id"] != second["request_id"]
