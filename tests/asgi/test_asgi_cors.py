"""CORS as vLLM configures it (Starlette's semantics): preflights answered here, allowed
origins told so on every response, the rest left alone."""

from __future__ import annotations

from typing import Any

import pytest
from asgi_fakes import Collector, http_scope, receive

from asgi.cors import CORSMiddleware

pytestmark = pytest.mark.anyio
ORIGIN = b"https://app.example"


async def run(scope: dict[str, Any], **options: Any) -> tuple[bool, int, dict[bytes, bytes]]:
    """(whether the inner app ran, the status, the response headers)."""
    reached: list[bool] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        reached.append(True)
        await snd({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await snd({"type": "http.response.body", "body": b"ok", "more_body": False})

    settings = {
        "allowed_origins": ("*",),
        "allowed_methods": ("*",),
        "allowed_headers": ("*",),
        "allow_credentials": False,
        **options,
    }
    send = Collector()
    await CORSMiddleware(app, **settings)(scope, receive, send)
    start = send.messages[0]
    return bool(reached), start["status"], dict(start["headers"])


def preflight(method: bytes = b"POST", headers: bytes = b"authorization, content-type"):
    return http_scope(
        "/v1/chat/completions",
        "OPTIONS",
        [
            (b"origin", ORIGIN),
            (b"access-control-request-method", method),
            (b"access-control-request-headers", headers),
        ],
    )


async def test_a_preflight_is_answered_without_reaching_the_app() -> None:
    reached, status, headers = await run(preflight())
    assert not reached and status == 200
    assert headers[b"access-control-allow-origin"] == b"*"
    assert b"POST" in headers[b"access-control-allow-methods"]
    assert headers[b"access-control-allow-headers"] == b"authorization, content-type"
    assert b"access-control-allow-credentials" not in headers


async def test_a_response_to_an_allowed_origin_says_so() -> None:
    scope = http_scope(headers=[(b"origin", ORIGIN)])
    reached, status, headers = await run(scope)
    assert reached and status == 200 and headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"x-app"] == b"1"


async def test_no_origin_no_cors_headers() -> None:
    reached, _, headers = await run(http_scope())
    assert reached and not any(k.startswith(b"access-control") for k in headers)


async def test_listed_origins_and_credentials() -> None:
    options = {"allowed_origins": ("https://app.example",), "allow_credentials": True}
    _, status, headers = await run(preflight(), **options)
    assert status == 200 and headers[b"access-control-allow-origin"] == ORIGIN
    assert headers[b"access-control-allow-credentials"] == b"true"
    other = http_scope(headers=[(b"origin", b"https://evil.example")])
    reached, _, headers = await run(other, **options)
    assert reached and b"access-control-allow-origin" not in headers
    scope = preflight()
    scope["headers"][0] = (b"origin", b"https://evil.example")
    reached, status, _ = await run(scope, **options)
    assert not reached and status == 400


async def test_a_method_or_header_outside_the_lists_fails_the_preflight() -> None:
    narrow = {"allowed_methods": ("GET",), "allowed_headers": ("x-custom",)}
    assert (await run(preflight(b"POST", b"x-custom"), **narrow))[1] == 400
    assert (await run(preflight(b"GET", b"authorization"), **narrow))[1] == 400
    _, status, headers = await run(preflight(b"GET", b"x-custom, content-type"), **narrow)
    assert status == 200 and b"x-custom" in headers[b"access-control-allow-headers"]
