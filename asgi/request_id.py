"""Gives every request an id (the client's X-Request-Id if sane) and echoes it in the response."""

from __future__ import annotations

import uuid

from asgi.router import ASGIApp, Message, Receive, Scope, Send

_HEADER = b"x-request-id"
_MAX_LEN = 256


def _acceptable(value: bytes) -> bool:
    # Visible ASCII only: the id ends up in logs and response headers, so no spaces or controls.
    return 0 < len(value) <= _MAX_LEN and all(0x21 <= b <= 0x7E for b in value)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = next((v for k, v in scope.get("headers", ()) if k.lower() == _HEADER), b"")
        request_id = incoming.decode("ascii") if _acceptable(incoming) else uuid.uuid4().hex
        scope = dict(scope)  # a copy: the server's scope object stays as it gave it
        scope["request_id"] = request_id
        encoded = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, encoded))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
