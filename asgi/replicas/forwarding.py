"""One HTTP exchange carried between the front and an engine replica.

The front sends a ForwardedRequest (the scope's plain fields, the whole body, the routing keys);
the replica runs its ASGI app on it and yields each message the app sends (http.response.start,
http.response.body ...), which the front passes on to the client as they come.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import attrs

from asgi.router import ASGIApp, Message, Receive, Scope

# The parts of an HTTP scope that mean the same in another process (no server objects).
_PORTABLE_FIELDS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "root_path",
    "query_string",
    "headers",
    "client",
    "server",
)


@attrs.frozen
class ForwardedRequest:
    scope: dict[str, Any]
    body: bytes
    # Hashes of the prompt's successive prefixes, shortest first (prefixes.py); the prefix
    # router sends a request where its longest known one went.
    prefix_keys: tuple[int, ...] = ()


def portable_scope(scope: Scope) -> dict[str, Any]:
    portable = {name: scope[name] for name in _PORTABLE_FIELDS if name in scope}
    portable["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
    return portable


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, cut at `limit` + 1 bytes (the replica's body limit then answers 413
    as the single-process server would); None when the client went away first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk[: limit + 1 - size])
        size += len(chunks[-1])
        if not message.get("more_body", False) or size > limit:
            return b"".join(chunks)


async def run_forwarded(
    app: ASGIApp, state: dict[str, Any], request: ForwardedRequest
) -> AsyncIterator[Message]:
    """The messages `app` sends while serving `request`. Closing this generator early (the
    client went away, so Ray cancelled the call) cancels the app's handling, which aborts its
    engine sequences as a disconnect does."""
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect comes: cancellation ends the request
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        await sent.put(message)

    async def serve() -> None:
        try:
            await app({**request.scope, "state": dict(state)}, receive, send)
        finally:
            await sent.put(None)

    task = asyncio.create_task(serve())
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body"):
                break
    except BaseException:
        task.cancel()
        raise
    await task  # what follows the last message (the request's log line, its metrics)
