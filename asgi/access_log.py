"""One log line per HTTP request: id, method, path, status, tokens, time to first token, total.

Placed inside the request-id middleware (the line carries the id) and outside the error
middleware (an unhandled exception is logged with the 500 the client got). The engines add the
token counts to the request's record (observability/request_log.py explains how).
"""

from __future__ import annotations

from asgi.router import ASGIApp, Message, Receive, Scope, Send
from observability import request_log


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        record = request_log.RequestRecord()
        status: int | None = None
        complete = False

        async def watching_send(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        token = request_log.begin(record)
        try:
            await self.app(scope, receive, watching_send)
        finally:
            request_log.end(token)
            request_log.log_request(
                request_id=scope.get("request_id"),
                method=scope.get("method", ""),
                path=scope.get("path", ""),
                status=status,
                complete=complete,
                record=record,
            )
