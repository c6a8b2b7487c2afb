"""Operational routes: /health (and /ping), /version, /metrics.

Unlike vLLM, which does not answer at all while loading, /health answers 503 with the loading
state so that readiness probes can tell "loading" from "failed" (llama.cpp does the same).
"""

from __future__ import annotations

import functools
from importlib import metadata

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asgi.http import Request, Response, json_response
from observability.metrics import REGISTRY
from protocol.model_resolution import server_state

FALLBACK_VERSION = "0.1.0"


async def health(request: Request) -> Response:
    server = server_state(request)
    if server.status == "ready":
        return json_response({})
    if server.status == "failed":
        return json_response({"status": "failed", "error": server.error}, 503)
    return json_response({"status": server.status}, 503)


@functools.cache
def lumen_version() -> str:
    try:
        return metadata.version("lumen")
    except metadata.PackageNotFoundError:  # running from a source checkout
        return FALLBACK_VERSION


async def version(request: Request) -> Response:
    return json_response({"version": lumen_version()})


async def metrics(request: Request) -> Response:
    return Response(status=200, body=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
