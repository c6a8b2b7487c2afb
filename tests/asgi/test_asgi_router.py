from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from asgi_fakes import Collector, http_scope

from asgi.router import Router
from protocol.http import HTTPError, Request, Response, StreamingResponse, json_response

pytestmark = pytest.mark.anyio


def route_scope(path: str, method: str = "POST", **extra: Any) -> dict[str, Any]:
    return http_scope(path, method, [(b"Content-Type", b"application/json")], **extra)


def make_receive(parts: list[bytes] | None = None, disconnect: anyio.Event | None = None) -> Any:
    """Hands out the body parts, then blocks until `disconnect` is set (forever if None)."""
    parts = parts if parts is not None else [b""]
    queue = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if disconnect is None:
            await anyio.sleep_forever()
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    return receive


async def ok(request: Request) -> Response:
    return json_response({"ok": True})


async def test_plain_response() -> None:
    async def handler(request: Request) -> Response:
        return Response(
            status=201, body=b"hello", media_type="text/plain", headers=[(b"x-extra", b"1")]
        )

    send = Collector()
    router = Router({("GET", "/version"): handler})
    await router(route_scope("/version", "GET"), make_receive(), send)
    assert send.start["status"] == 201
    assert send.headers == {
        b"content-type": b"text/plain",
        b"content-length": b"5",
        b"x-extra": b"1",
    }
    assert send.messages[1] == {"type": "http.response.body", "body": b"hello", "more_body": False}
    assert len(send.messages) == 2


async def test_request_is_built_from_scope_and_whole_body() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return json_response({})

    state = {"server": object()}
    scope = route_scope("/v1/completions", query_string=b"a=1", state=state, request_id="rid-7")
    await Router({("POST", "/v1/completions"): handler})(
        scope, make_receive([b'{"prompt":', b' "hi"}']), Collector()
    )
    (request,) = seen
    assert request.method == "POST"
    assert request.path == "/v1/completions"
    assert request.headers == {"content-type": "application/json"}
    assert request.query_string == b"a=1"
    assert request.body == b'{"prompt": "hi"}'
    assert request.state is state
    assert request.request_id == "rid-7"


async def test_request_id_generated_without_middleware() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return json_response({})

    await Router({("POST", "/x"): handler})(route_scope("/x"), make_receive(), Collector())
    assert len(seen[0].request_id) == 32
    assert seen[0].state == {}


async def test_trailing_slash_matches() -> None:
    send = Collector()
    await Router({("GET", "/metrics"): ok})(route_scope("/metrics/", "GET"), make_receive(), send)
    assert send.start["status"] == 200


async def test_unknown_path_is_404() -> None:
    send = Collector()
    await Router({("GET", "/v1/models"): ok})(route_scope("/nope", "GET"), make_receive(), send)
    assert send.start["status"] == 404
    assert send.headers[b"content-type"] == b"application/json"
    assert orjson.loads(send.body) == {
        "error": {
            "message": "Not Found: /nope",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


async def test_wrong_method_is_405_with_allow() -> None:
    router = Router({("GET", "/v1/models"): ok, ("POST", "/v1/models"): ok, ("GET", "/x"): ok})
    send = Collector()
    await router(route_scope("/v1/models", "DELETE"), make_receive(), send)
    assert send.start["status"] == 405
    assert send.headers[b"allow"] == b"GET, POST"
    assert orjson.loads(send.body)["error"] == {
        "message": "Method Not Allowed",
        "type": "MethodNotAllowed",
        "param": None,
        "code": 405,
    }


async def test_http_error_becomes_its_response() -> None:
    async def handler(request: Request) -> Response:
        raise HTTPError(400, "bad temperature", param="temperature")

    send = Collector()
    await Router({("POST", "/v1/completions"): handler})(
        route_scope("/v1/completions"), make_receive(), send
    )
    assert send.start["status"] == 400
    assert orjson.loads(send.body)["error"] == {
        "message": "bad temperature",
        "type": "BadRequestError",
        "param": "temperature",
        "code": 400,
    }
    assert len(send.messages) == 2


async def test_other_exceptions_propagate_unwrapped() -> None:
    async def handler(request: Request) -> Response:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await Router({("POST", "/x"): handler})(route_scope("/x"), make_receive(), Collector())


async def test_streaming_response_chunks_in_order() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), headers=[(b"x-extra", b"1")])

    send = Collector()
    await Router({("POST", "/s"): handler})(route_scope("/s"), make_receive(), send)
    assert send.start["status"] == 200
    assert send.headers == {
        b"content-type": b"text/event-stream",
        b"cache-control": b"no-cache",
        b"x-extra": b"1",
    }
    assert [(m["body"], m["more_body"]) for m in send.messages[1:]] == [
        (b"data: 0\n\n", True),
        (b"data: 1\n\n", True),
        (b"data: 2\n\n", True),
        (b"", False),
    ]


async def test_streaming_is_not_buffered() -> None:
    seen_first = anyio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        await seen_first.wait()  # deadlocks if the router held chunk one back
        yield b"two"

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    send = Collector(signal=seen_first)
    with anyio.fail_after(5):
        await Router({("POST", "/s"): handler})(route_scope("/s"), make_receive(), send)
    assert send.bodies == [b"one", b"two", b""]


async def test_disconnect_during_stream_cancels_and_closes_generator() -> None:
    disconnect = anyio.Event()
    closed: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"one"
            await anyio.sleep_forever()  # an engine that would never finish on its own
            yield b"never"
        finally:
            closed.append(True)

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    send = Collector(signal=disconnect)
    with anyio.fail_after(5):
        await Router({("POST", "/s"): handler})(
            route_scope("/s"), make_receive(disconnect=disconnect), send
        )
    assert closed == [True]
    assert send.bodies == [b"one"]  # no final body to a gone client


class Chunks:
    """A non-generator iterator whose aclose is the engine's abort hook."""

    def __init__(self) -> None:
        self.closed = False
        self.sent = 0

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self.sent:
            await anyio.sleep_forever()
        self.sent += 1
        return b"one"

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()  # would be cancelled again without the shield
        self.closed = True


async def test_disconnect_calls_aclose_shielded() -> None:
    disconnect = anyio.Event()
    chunks = Chunks()

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks)

    with anyio.fail_after(5):
        await Router({("POST", "/s"): handler})(
            route_scope("/s"), make_receive(disconnect=disconnect), Collector(signal=disconnect)
        )
    assert chunks.closed


async def test_aclose_runs_after_normal_stream_end() -> None:
    class Finite(Chunks):
        async def __anext__(self) -> bytes:
            if self.sent:
                raise StopAsyncIteration
            self.sent += 1
            return b"one"

    chunks = Finite()

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks)

    send = Collector()
    await Router({("POST", "/s"): handler})(route_scope("/s"), make_receive(), send)
    assert chunks.closed
    assert send.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_disconnect_cancels_slow_handler() -> None:
    disconnect = anyio.Event()
    cancelled: list[bool] = []

    async def handler(request: Request) -> Response:
        try:
            disconnect.set()
            await anyio.sleep_forever()
        finally:
            cancelled.append(True)
        raise AssertionError("unreachable")

    send = Collector()
    with anyio.fail_after(5):
        await Router({("POST", "/x"): handler})(
            route_scope("/x"), make_receive(disconnect=disconnect), send
        )
    assert cancelled == [True]
    assert send.messages == []


async def test_disconnect_while_reading_body_skips_handler() -> None:
    called: list[bool] = []

    async def handler(request: Request) -> Response:
        called.append(True)
        return json_response({})

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    send = Collector()
    await Router({("POST", "/x"): handler})(route_scope("/x"), receive, send)
    assert not called
    assert send.messages == []


async def test_lifespan_scope_is_refused() -> None:
    with pytest.raises(AssertionError):
        await Router({})({"type": "lifespan"}, make_receive(), Collector())


async def test_a_route_that_takes_no_body_never_reads_one() -> None:
    """A public route (no key needed) must not buffer what a client sends it."""
    seen: list[bytes] = []

    async def handler(request: Request) -> Response:
        seen.append(request.body)
        return json_response({"ok": True})

    send = Collector()
    router = Router({("POST", "/ping"): handler}, bodiless=frozenset({("POST", "/ping")}))
    await router(route_scope("/ping"), make_receive([b"x" * 1000, b"y" * 1000]), send)
    assert seen == [b""]
    assert send.messages[0]["status"] == 200


async def test_a_template_route_gets_its_named_segments() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return json_response({"ok": True})

    routes = {
        ("GET", "/v1/responses/{response_id}"): handler,
        ("DELETE", "/v1/responses/{response_id}"): handler,
        ("POST", "/v1/responses"): ok,
    }
    router = Router(routes, bodiless=frozenset({("GET", "/v1/responses/{response_id}")}))
    send = Collector()
    await router(route_scope("/v1/responses/resp_1/", "GET"), make_receive(), send)
    assert send.start["status"] == 200
    assert seen[0].path_params == {"response_id": "resp_1"}
    assert seen[0].path == "/v1/responses/resp_1"
    for path, method, status in [
        ("/v1/responses/resp_1", "PUT", 405),  # the template's methods answer Allow
        ("/v1/responses/resp_1/cancel", "GET", 404),
        ("/v1/responses//", "GET", 404),  # an empty segment is no id
    ]:
        send = Collector()
        await router(route_scope(path, method), make_receive(), send)
        assert send.start["status"] == status, path
