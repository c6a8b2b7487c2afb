"""A served route, declared once as data.

The router dispatches on (method, path), auth opens the `public` ones, draining keeps the
`operational` ones open (and does not count them as load), and /openapi.json documents each
from its summary and schemas: a path string is written in one place, its route entry.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.http import Handler

JSON = "application/json"


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    # The body schema: an attrs class, or a callable(openapi.SchemaBuilder) -> JSON Schema for a
    # body that comes in several forms. None: no body.
    request: Any = None
    response: Any = None  # an attrs class, a component name of protocol/openapi.py, or None
    # The chunk class (or, as `request`, a schema callable) when `stream: true` streams.
    stream: Any = None
    media_type: str = JSON
    query: dict[str, Any] = attrs.field(factory=dict)  # name -> schema of a query parameter
    # The error body's schema, as `response`; None: OpenAI's ({"error": {...}}).
    error: Any = None
    public: bool = False  # answered without the API key
    # Health, load and metrics: still answered while the server drains, and not load themselves.
    operational: bool = False


def paths_where(routes: list[Route], flag: str) -> frozenset[str]:
    """The paths of the routes with `flag` ("public" or "operational") set."""
    return frozenset(route.path for route in routes if getattr(route, flag))
