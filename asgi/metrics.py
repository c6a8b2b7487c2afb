"""HTTP request count, duration and in-flight gauge, with bounded label values."""

from __future__ import annotations

import time

from asgi.router import ASGIApp, Message, PathTemplates, Receive, Scope, Send
from observability.metrics import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_PROGRESS,
)

# Anything else is a client's invention; labelling it verbatim would grow series without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, known_paths: frozenset[str]) -> None:
        self.app = app
        self.known_paths = PathTemplates(known_paths)

    def handler_label(self, path: str) -> str:
        """The route's path (a template's, not the id in it), or "other"."""
        found = self.known_paths.match(path)
        return found[0] if found is not None else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        handler = self.handler_label(scope["path"])
        method = scope["method"] if scope["method"] in _METHODS else "other"
        # Stays 5xx if the app never starts a response: it raised, and the client gets a 500.
        status = "5xx"
        recorded = False
        began = time.perf_counter()

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                HTTP_REQUEST_DURATION.labels(handler, method).observe(time.perf_counter() - began)
                HTTP_REQUESTS.labels(handler, method, status).inc()

        async def measuring_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = f"{message['status'] // 100}xx"
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # the response is over for the client, even if the app lingers

        in_progress = HTTP_REQUESTS_IN_PROGRESS.labels(handler, method)
        in_progress.inc()
        try:
            await self.app(scope, receive, measuring_send)
        finally:
            record()
            in_progress.dec()
