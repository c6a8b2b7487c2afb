"""Router: finds a request's route (exact paths, and templates with `{name}` segments), reads
the body, calls the handler and turns its result into ASGI messages.

A client disconnect cancels the handler and its stream: the response runs in a task group next
to a task that waits for `http.disconnect`, because hypercorn never raises on `send` to a gone
client. Closing the stream's iterator (always, shielded) is what aborts the request in the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio

from protocol.http import (
    Handler,
    HTTPError,
    Request,
    Response,
    StreamingResponse,
    error_response,
)

# The ASGI vocabulary, shared by the middlewares so every layer names it the same way.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_path(path: str) -> str:
    """'/metrics/' names the same route as '/metrics'. Auth and metrics use this too, so all
    layers agree on which route a request is."""
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


class PathTemplates:
    """The route paths, some with `{name}` segments (/v1/responses/{response_id}): which one a
    request's path is, and its segments' values."""

    def __init__(self, paths: Iterable[str]) -> None:
        paths = {route_path(p) for p in paths}
        self.exact = frozenset(p for p in paths if "{" not in p)
        self.templates = [(p, p.split("/")) for p in sorted(paths - self.exact)]

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """(the route's path, its named segments' values), or None for no route."""
        path = route_path(path)
        if path in self.exact:
            return path, {}
        parts = path.split("/")
        for template, segments in self.templates:
            if len(segments) != len(parts):
                continue
            values = {}
            for segment, part in zip(segments, parts, strict=True):
                if segment.startswith("{"):
                    if not part:
                        break
                    values[segment[1:-1]] = part
                elif segment != part:
                    break
            else:
                return template, values
        return None


class Router:
    def __init__(
        self,
        routes: dict[tuple[str, str], Handler],
        bodiless: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """bodiless: the (method, path) routes that take no body. Theirs is never read, so a
        client without a key cannot make a public route buffer megabytes."""
        self.bodiless = frozenset((method.upper(), route_path(path)) for method, path in bodiless)
        # path -> method -> handler, so an unknown path (404) and a wrong method (405) differ.
        self.routes: dict[str, dict[str, Handler]] = {}
        for (method, path), handler in routes.items():
            self.routes.setdefault(route_path(path), {})[method.upper()] = handler
        self.paths = PathTemplates(self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", "lifespan is handled in front of the router"
        path: str = scope["path"]
        found = self.paths.match(path)
        if found is None:
            await send_response(send, error_response(404, f"Not Found: {path}", "NotFoundError"))
            return
        template, path_params = found
        methods = self.routes[template]
        handler = methods.get(scope["method"])
        if handler is None:
            response = error_response(405, "Method Not Allowed", "MethodNotAllowed")
            response.headers.append((b"allow", ", ".join(sorted(methods)).encode("latin-1")))
            await send_response(send, response)
            return

        if (scope["method"], template) in self.bodiless:
            body: bytes | None = b""
        else:
            body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its whole request: nobody to answer
        raw_headers = scope.get("headers", ())
        request = Request(
            method=scope["method"],
            path=route_path(path),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers},
            query_string=scope.get("query_string", b""),
            body=body,
            state=scope.get("state", {}),
            request_id=scope.get("request_id") or uuid.uuid4().hex,
            authorized=scope.get("authorized", True),
            path_params=path_params,
        )

        # Caught inside the task group and re-raised after it, so callers see the handler's own
        # exception rather than an ExceptionGroup.
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            try:
                await _respond(handler, request, send)
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
                failure = exc
            finally:
                tg.cancel_scope.cancel()  # response done (or failed): stop watching
        if failure is not None:
            raise failure


async def _read_body(receive: Receive) -> bytes | None:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _cancel_on_disconnect(receive: Receive, cancel_scope: anyio.CancelScope) -> None:
    while True:
        if (await receive())["type"] == "http.disconnect":
            cancel_scope.cancel()
            return


async def _respond(handler: Handler, request: Request, send: Send) -> None:
    try:
        response = await handler(request)
    except HTTPError as exc:
        # Raised before anything was sent (a stream's errors surface later, in _stream).
        response = exc.to_response()
    if isinstance(response, StreamingResponse):
        await _stream(send, response)
    else:
        await send_response(send, response)


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.media_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("latin-1")),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def send_closing_error(send: Send, status: int, message: str, err_type: str) -> None:
    """An error answer after which the client must not reuse the connection: its body was
    not (all) read, or the server is going away."""
    response = error_response(status, message, err_type)
    response.headers.append((b"connection", b"close"))
    await send_response(send, response)


async def _stream(send: Send, response: StreamingResponse) -> None:
    chunks = response.chunks
    try:
        headers = [
            (b"content-type", response.media_type.encode("latin-1")),
            (b"cache-control", b"no-cache"),
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        # Closing the iterator is how the engine learns to abort; shielded so it still runs
        # when a disconnect cancelled us.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
