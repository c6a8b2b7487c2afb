"""What every middleware in the stack must do, whatever else it does.

Non-HTTP scopes (the lifespan) go to the inner app untouched, and a streamed body goes out chunk by
chunk instead of being held back. Each middleware is built so that a request reaches its app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, http_scope, receive

from asgi.access_log import AccessLogMiddleware
from asgi.auth import AuthMiddleware
from asgi.body_limits import BodyLimitMiddleware
from asgi.cors import CORSMiddleware
from asgi.draining import DrainingMiddleware
from asgi.errors import ErrorMiddleware
from asgi.metrics import MetricsMiddleware
from asgi.request_id import RequestIdMiddleware
from asgi.router import ASGIApp

pytestmark = pytest.mark.anyio

KEY = "sk-test-key"
PATH = "/v1/chat/completions"

MIDDLEWARES: dict[str, Callable[[ASGIApp], ASGIApp]] = {
    "errors": ErrorMiddleware,
    "access_log": AccessLogMiddleware,
    "request_id": RequestIdMiddleware,
    "metrics": lambda app: MetricsMiddleware(app, known_paths=frozenset({PATH})),
    "auth": lambda app: AuthMiddleware(app, api_key=KEY, public_paths=frozenset()),
    "draining": lambda app: DrainingMiddleware(app, operational_paths=frozenset()),
    "body_limits": lambda app: BodyLimitMiddleware(app, max_bytes=1024, timeout_s=5),
    "cors": lambda app: CORSMiddleware(
        app,
        allowed_origins=("*",),
        allowed_methods=("*",),
        allowed_headers=("*",),
        allow_credentials=False,
    ),
}


@pytest.fixture(params=list(MIDDLEWARES.values()), ids=list(MIDDLEWARES))
def wrap(request: pytest.FixtureRequest) -> Callable[[ASGIApp], ASGIApp]:
    return request.param


async def test_lifespan_passes_through_untouched(wrap: Callable[[ASGIApp], ASGIApp]) -> None:
    seen: list[Any] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        seen.extend([scope, rcv, snd])

    scope = {"type": "lifespan", "state": {}}
    send = Collector()
    await wrap(app)(scope, receive, send)
    assert seen[0] is scope and seen[1] is receive and seen[2] is send
    assert scope == {"type": "lifespan", "state": {}}  # not edited on the way through
    assert "request_id" not in scope
    assert send.messages == []


async def test_streaming_is_not_buffered(wrap: Callable[[ASGIApp], ASGIApp]) -> None:
    seen_first = anyio.Event()

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd({"type": "http.response.start", "status": 200, "headers": []})
        await snd({"type": "http.response.body", "body": b"one", "more_body": True})
        await seen_first.wait()  # deadlocks if the middleware held chunk one back
        await snd({"type": "http.response.body", "body": b"two", "more_body": False})

    send = Collector(signal=seen_first)
    scope = http_scope(PATH, headers=[(b"authorization", b"Bearer " + KEY.encode())])
    with anyio.fail_after(5):
        await wrap(app)(scope, receive, send)
    assert send.start["status"] == 200
    assert send.bodies == [b"one", b"two"]
