from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest

from asgi.auth import AuthMiddleware

pytestmark = pytest.mark.anyio

KEY = "sk-test-key"


def http_scope(
    path: str = "/v1/chat/completions", method: str = "POST", authorization: bytes | None = None
) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return {"type": "http", "method": method, "path": path, "headers": headers}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def run(middleware_key: str | None, scope: dict[str, Any]) -> tuple[bool, list[Any]]:
    """Returns (whether the inner app ran, messages sent)."""
    reached: list[bool] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        reached.append(True)
        await snd({"type": "http.response.start", "status": 200, "headers": []})
        await snd({"type": "http.response.body", "body": b"ok", "more_body": False})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await AuthMiddleware(app, api_key=middleware_key)(scope, receive, send)
    return bool(reached), sent


async def test_lifespan_passes_through_untouched() -> None:
    seen: list[Any] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        seen.extend([scope, rcv, snd])

    async def send(message: Any) -> None:
        pass

    scope = {"type": "lifespan"}
    await AuthMiddleware(app, api_key=KEY)(scope, receive, send)
    assert seen[0] is scope and seen[1] is receive and seen[2] is send


async def test_missing_key_gets_401_shape_and_header() -> None:
    reached, sent = await run(KEY, http_scope())
    assert not reached
    start, body = sent
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"www-authenticate"] == b"Bearer"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert body["more_body"] is False
    error = orjson.loads(body["body"])["error"]
    assert error["type"] == "AuthenticationError"
    assert error["code"] == 401
    assert "Authorization: Bearer <key>" in error["message"]
    assert error["param"] is None


@pytest.mark.parametrize(
    "value", [b"Bearer sk-test-key", b"bearer sk-test-key", b"BEARER sk-test-key"]
)
async def test_correct_key_passes(value: bytes) -> None:
    reached, sent = await run(KEY, http_scope(authorization=value))
    assert reached
    assert sent[0]["status"] == 200


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer sk-wrong",
        b"Bearer SK-TEST-KEY",  # the key itself is case-sensitive
        b"Bearer sk-test-key-and-more",
        b"Basic sk-test-key",
        b"sk-test-key",
        b"Bearer",
        b"",
    ],
)
async def test_wrong_key_or_scheme_fails(value: bytes) -> None:
    reached, sent = await run(KEY, http_scope(authorization=value))
    assert not reached
    assert sent[0]["status"] == 401


@pytest.mark.parametrize("path", ["/health", "/health/", "/ping", "/version", "/metrics/"])
async def test_public_paths_are_open(path: str) -> None:
    reached, _ = await run(KEY, http_scope(path=path, method="GET"))
    assert reached


@pytest.mark.parametrize(
    "path", ["/v1/models", "/tokenize", "/invocations", "/v2/anything", "/", "/healthz"]
)
async def test_every_other_route_is_protected(path: str) -> None:
    reached, sent = await run(KEY, http_scope(path=path, method="GET"))
    assert not reached
    assert sent[0]["status"] == 401


async def test_options_passes_without_key() -> None:
    reached, _ = await run(KEY, http_scope(method="OPTIONS"))
    assert reached


@pytest.mark.parametrize("key", [None, ""])
async def test_no_key_configured_passes_everything(key: str | None) -> None:
    reached, _ = await run(key, http_scope())
    assert reached


async def test_custom_public_paths() -> None:
    reached: list[bool] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        reached.append(True)

    async def send(message: Any) -> None:
        pass

    middleware = AuthMiddleware(app, api_key=KEY, public_paths=frozenset({"/open"}))
    await middleware(http_scope(path="/open"), receive, send)
    await middleware(http_scope(path="/health"), receive, send)
    assert reached == [True]


async def test_streaming_is_not_buffered() -> None:
    seen_first = anyio.Event()

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd({"type": "http.response.start", "status": 200, "headers": []})
        await snd({"type": "http.response.body", "body": b"one", "more_body": True})
        await seen_first.wait()
        await snd({"type": "http.response.body", "body": b"two", "more_body": False})

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message.get("body") == b"one":
            seen_first.set()

    scope = http_scope(authorization=b"Bearer " + KEY.encode())
    with anyio.fail_after(5):
        await AuthMiddleware(app, api_key=KEY)(scope, receive, send)
    assert [m.get("body") for m in messages[1:]] == [b"one", b"two"]
