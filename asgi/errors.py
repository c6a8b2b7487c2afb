"""Outermost middleware: an unhandled exception becomes a 500, or a cleanly ended body."""

from __future__ import annotations

import logging

from asgi.router import ASGIApp, Message, Receive, Scope, Send
from protocol.http import error_body

log = logging.getLogger(__name__)


class ErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            # Flagged before the await: a start that raised must not be followed by another.
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = scope.get("request_id")
            log.exception(
                "Unhandled error in %s %s (request_id=%s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            # Not re-raised: hypercorn would log the same traceback a second time.
            if not started:
                await send_500(send, request_id)
            elif not finished:
                # Headers are out; all we can do is end the body so the client isn't left hanging.
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_500(send: Send, request_id: str | None) -> None:
    await send_error(send, 500, "Internal server error", "InternalServerError", request_id)


async def send_error(
    send: Send, status: int, message: str, err_type: str, request_id: str | None = None
) -> None:
    """A whole OpenAI-shaped error response, for layers outside the router's handlers."""
    body = error_body(status, message, err_type)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if request_id:
        # This layer may sit outside the request-id middleware, which then can't add it.
        headers.append((b"x-request-id", str(request_id).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
