"""Reads the request body under a size limit (413) and a deadline (408), then hands it on.

Without these a client could make the server buffer any amount of memory, or hold a
connection and its buffers open forever by sending a byte now and then. The body is read
here, before routing, and replayed to the app as one message; later receives (the router
watches for the client leaving) go to the server as usual.
"""

from __future__ import annotations

import anyio

from asgi.router import ASGIApp, Message, Receive, Scope, Send, send_closing_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._too_large(send, receive, more_body=True)
            return
        parts: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout_s) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nobody to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._too_large(send, receive, message.get("more_body", False))
                    return
                parts.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            await send_closing_error(
                send,
                408,
                f"The request body did not arrive within {self.timeout_s:g} s.",
                "RequestTimeoutError",
            )
            return

        body = b"".join(parts)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, receive: Receive, more_body: bool) -> None:
        await send_closing_error(
            send,
            413,
            f"The request body is larger than the limit of {self.max_bytes} bytes.",
            "RequestEntityTooLargeError",
        )
        # Most clients read the answer only once they have sent their whole body; closing on
        # them mid-upload resets the connection and they never see the 413. So the rest is
        # read and dropped (nothing kept), for at most the body timeout.
        with anyio.move_on_after(self.timeout_s):
            while more_body:
                message = await receive()
                more_body = message["type"] != "http.disconnect" and message.get("more_body", False)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the server rejects a malformed length itself
    return 0
