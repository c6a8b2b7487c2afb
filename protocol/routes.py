"""Every protocol route, as (METHOD, path) → handler, for the router to dispatch on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgi.http import Request, Response, StreamingResponse
from protocol.serving_chat import create_chat_completion
from protocol.serving_completion import create_completion
from protocol.serving_models import list_models
from protocol.serving_server import health, metrics, version
from protocol.serving_tokenize import detokenize, tokenize

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


def build_routes() -> dict[tuple[str, str], Handler]:
    return {
        ("POST", "/v1/completions"): create_completion,
        ("POST", "/v1/chat/completions"): create_chat_completion,
        ("POST", "/tokenize"): tokenize,
        ("POST", "/detokenize"): detokenize,
        ("GET", "/v1/models"): list_models,
        ("GET", "/health"): health,
        ("GET", "/ping"): health,  # SageMaker's health check
        ("POST", "/ping"): health,
        ("GET", "/version"): version,
        ("GET", "/metrics"): metrics,
    }
