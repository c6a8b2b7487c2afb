"""Which engine serves a request's `model` (vLLM's rules), or the client-visible reason why none."""

from __future__ import annotations

from typing import Any

from asgi.http import HTTPError, Request
from asgi.state import ServerState


def server_state(request: Request) -> ServerState:
    return request.state["server"]


def resolve_engine(request: Request, model: str | None) -> Any:
    """Absent or empty `model` means the first served model; an unknown name is a 404."""
    server = server_state(request)
    if not server.engines:
        if server.status == "failed":
            raise HTTPError(
                503, f"The model failed to load: {server.error}", "ServiceUnavailableError"
            )
        raise HTTPError(
            503,
            "The model is still loading; retry once GET /health returns 200.",
            "ServiceUnavailableError",
        )
    if not model:
        return next(iter(server.engines.values()))
    engine = server.engines.get(model)
    if engine is None:
        raise HTTPError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    return engine
