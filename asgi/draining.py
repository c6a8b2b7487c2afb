"""Counts the requests in flight (GET /load) and turns new ones away once shutdown begins.

Operational routes (the route table's `operational`: health, load, metrics) stay open while
draining, so /health can say so and scrapers keep scraping; they are not counted either: a
health probe is not load.
"""

from __future__ import annotations

from asgi.router import ASGIApp, Receive, Scope, Send, route_path, send_closing_error


class DrainingMiddleware:
    def __init__(self, app: ASGIApp, *, operational_paths: frozenset[str]) -> None:
        self.app = app
        self.operational_paths = operational_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("state", {}).get("server")
        if (
            scope["type"] != "http"
            or server is None
            or route_path(scope["path"]) in self.operational_paths
        ):
            await self.app(scope, receive, send)
            return
        if server.draining:
            await send_closing_error(
                send, 503, "The server is shutting down.", "ServiceUnavailableError"
            )
            return
        server.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            server.in_flight -= 1
