from __future__ import annotations

import re
from typing import Any

import pytest
from asgi_fakes import Collector, discard, http_scope, json_response_parts, receive

from asgi.auth import AuthMiddleware
from protocol.route import paths_where
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio

KEY = "sk-test-key"
PUBLIC = paths_where(build_routes(), "public")  # what the app passes


def auth_scope(
    path: str = "/v1/chat/completions", method: str = "POST", authorization: bytes | None = None
) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return http_scope(path, method, headers)


async def run(middleware_key: str | None, scope: dict[str, Any]) -> tuple[bool, list[Any]]:
    """Returns (whether the inner app ran, messages sent)."""
    reached: list[bool] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        reached.append(True)
        await snd({"type": "http.response.start", "status": 200, "headers": []})
        await snd({"type": "http.response.body", "body": b"ok", "more_body": False})

    send = Collector()
    await AuthMiddleware(app, api_key=middleware_key, public_paths=PUBLIC)(scope, receive, send)
    return bool(reached), send.messages


async def test_missing_key_gets_401_shape_and_header() -> None:
    reached, sent = await run(KEY, auth_scope())
    assert not reached
    headers, payload = json_response_parts(sent, 401)
    assert headers[b"www-authenticate"] == b"Bearer"
    error = payload["error"]
    assert error["type"] == "AuthenticationError"
    assert error["code"] == 401
    assert "Authorization: Bearer <key>" in error["message"]
    assert error["param"] is None


@pytest.mark.parametrize(
    "value", [b"Bearer sk-test-key", b"bearer sk-test-key", b"BEARER sk-test-key"]
)
async def test_correct_key_passes(value: bytes) -> None:
    reached, sent = await run(KEY, auth_scope(authorization=value))
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
    reached, sent = await run(KEY, auth_scope(authorization=value))
    assert not reached
    assert sent[0]["status"] == 401


@pytest.mark.parametrize(
    "path", ["/health", "/health/", "/ping", "/version", "/metrics/", "/openapi.json", "/docs"]
)
async def test_public_paths_are_open(path: str) -> None:
    reached, _ = await run(KEY, auth_scope(path=path, method="GET"))
    assert reached


# Every route of the table that is not public (an id standing in for a path's {segment}).
PROTECTED = sorted(
    {
        re.sub(r"\{\w+\}", "some-id", route.path)
        for route in build_routes()
        if route.path not in PUBLIC
    }
)


@pytest.mark.parametrize("path", [*PROTECTED, "/v2/anything", "/healthz", "/playground/x.js"])
async def test_every_other_route_is_protected(path: str) -> None:
    reached, sent = await run(KEY, auth_scope(path=path, method="GET"))
    assert not reached
    assert sent[0]["status"] == 401


async def test_options_passes_without_key() -> None:
    reached, _ = await run(KEY, auth_scope(method="OPTIONS"))
    assert reached


@pytest.mark.parametrize("key", [None, ""])
async def test_no_key_configured_passes_everything(key: str | None) -> None:
    reached, _ = await run(key, auth_scope())
    assert reached


async def test_custom_public_paths() -> None:
    reached: list[bool] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        reached.append(True)

    middleware = AuthMiddleware(app, api_key=KEY, public_paths=frozenset({"/open"}))
    await middleware(auth_scope(path="/open"), receive, discard)
    await middleware(auth_scope(path="/health"), receive, discard)
    assert reached == [True]


@pytest.mark.parametrize(
    ("sent", "opens"), [(b"old-key", True), (b"new-key", True), (b"other", False)]
)
async def test_any_of_several_comma_separated_keys_opens(sent: bytes, opens: bool) -> None:
    """Rotation: the old and the new key both work while clients move over."""
    reached, sent_messages = await run(
        "old-key, new-key", auth_scope(authorization=b"Bearer " + sent)
    )
    assert reached == opens
    if not opens:
        assert sent_messages[0]["status"] == 401


@pytest.mark.parametrize(
    ("authorization", "expected"), [(None, False), (b"Bearer " + KEY.encode(), True)]
)
async def test_a_public_route_is_told_whether_the_client_showed_the_key(
    authorization: bytes | None, expected: bool
) -> None:
    scope = auth_scope(path="/health", method="GET", authorization=authorization)
    reached, _ = await run(KEY, scope)
    assert reached and scope["authorized"] is expected


@pytest.mark.parametrize(
    ("value", "passes"), [(b"sk-test-key", True), (b" sk-test-key ", True), (b"sk-wrong", False)]
)
async def test_the_key_is_also_read_from_x_api_key(value: bytes, passes: bool) -> None:
    scope = http_scope("/v1/messages", "POST", [(b"x-api-key", value)])
    reached, sent = await run(KEY, scope)
    assert reached is passes
    assert sent[0]["status"] == (200 if passes else 401)


async def test_either_header_holding_the_key_lets_the_client_in() -> None:
    # Either header alone decides; a client sending both gets in if either holds the key.
    scope = http_scope(
        "/v1/messages",
        "POST",
        [(b"authorization", b"Bearer sk-wrong"), (b"x-api-key", b"sk-test-key")],
    )
    reached, _ = await run(KEY, scope)
    assert reached
