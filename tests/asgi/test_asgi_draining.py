from __future__ import annotations

from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, http_scope, json_response_parts, receive

from asgi.draining import DrainingMiddleware
from configs.settings import Settings
from protocol.route import paths_where
from protocol.routes import build_routes
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio
OPERATIONAL = paths_where(build_routes(), "operational")  # what the app passes


def scope_for(server: ServerState, path: str) -> dict[str, Any]:
    return http_scope(path=path, state={"server": server})


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def test_requests_are_counted_while_in_flight_even_when_they_fail() -> None:
    server = ServerState(Settings())
    seen: list[int] = []

    async def failing(scope: Any, rcv: Any, send: Any) -> None:
        seen.append(server.in_flight)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await DrainingMiddleware(failing, operational_paths=OPERATIONAL)(
            scope_for(server, "/v1/completions"), receive, Collector()
        )
    await DrainingMiddleware(ok, operational_paths=OPERATIONAL)(
        scope_for(server, "/health"), receive, Collector()
    )  # not load
    assert seen == [1] and server.in_flight == 0


async def test_while_draining_new_requests_get_503_but_operations_still_answer() -> None:
    server = ServerState(Settings(), draining=True)
    send = Collector()
    await DrainingMiddleware(ok, operational_paths=OPERATIONAL)(
        scope_for(server, "/v1/chat/completions"), receive, send
    )
    headers, body = json_response_parts(send.messages, 503)
    assert body["error"]["type"] == "ServiceUnavailableError" and headers[b"connection"] == b"close"
    for path in ("/health", "/metrics", "/load"):
        send = Collector()
        await DrainingMiddleware(ok, operational_paths=OPERATIONAL)(
            scope_for(server, path), receive, send
        )
        assert send.start["status"] == 200


async def test_a_request_started_before_draining_finishes() -> None:
    server = ServerState(Settings())
    release = anyio.Event()

    async def slow(scope: Any, rcv: Any, send: Any) -> None:
        await release.wait()
        await ok(scope, rcv, send)

    send = Collector()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            DrainingMiddleware(slow, operational_paths=OPERATIONAL),
            scope_for(server, "/v1/completions"),
            receive,
            send,
        )
        await anyio.wait_all_tasks_blocked()
        server.draining = True
        assert server.in_flight == 1
        release.set()
    assert send.start["status"] == 200 and server.in_flight == 0
