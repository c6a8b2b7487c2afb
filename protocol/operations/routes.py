"""The operational routes: health (and SageMaker's /ping), load, version, metrics. Open while
the server drains, and not counted as load; all but /load answer without the API key."""

from __future__ import annotations

from protocol.operations.handlers import health, load, metrics, version
from protocol.route import Route


def _health(method: str, path: str) -> Route:
    return Route(
        method,
        path,
        health,
        "Readiness: 200 when every model is loaded",
        "server",
        response="HealthStatus",
        query={"deep": {"type": "boolean"}},
        public=True,
        operational=True,
    )


ROUTES = [
    _health("GET", "/health"),
    _health("GET", "/ping"),  # SageMaker's health check
    _health("POST", "/ping"),
    Route("GET", "/load", load, "Requests in flight", "server", None, "Load", operational=True),
    Route(
        "GET",
        "/version",
        version,
        "Server version",
        "server",
        None,
        "Version",
        public=True,
        operational=True,
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "server",
        media_type="text/plain",
        public=True,
        operational=True,
    ),
]
