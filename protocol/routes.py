"""Every protocol route, as (METHOD, path) → handler, for the router to dispatch on."""

from __future__ import annotations

from protocol.admission import engine_errors_as_http
from protocol.http import Handler
from protocol.openapi import docs, openapi_json
from protocol.serving_chat import create_chat_completion
from protocol.serving_classify import classify
from protocol.serving_completion import create_completion
from protocol.serving_embeddings import create_cohere_embed, create_embedding, create_pooling
from protocol.serving_models import list_models
from protocol.serving_score import create_rerank, create_score
from protocol.serving_server import health, load, metrics, version
from protocol.serving_tokenize import detokenize, tokenize


def build_routes() -> dict[tuple[str, str], Handler]:
    # Every handler answers an engine's refusal (at capacity, dead) with its HTTP status.
    return {route: engine_errors_as_http(handler) for route, handler in _handlers().items()}


def _handlers() -> dict[tuple[str, str], Handler]:
    return {
        ("POST", "/v1/completions"): create_completion,
        ("POST", "/v1/chat/completions"): create_chat_completion,
        ("POST", "/v1/embeddings"): create_embedding,
        ("POST", "/pooling"): create_pooling,
        ("POST", "/classify"): classify,
        ("POST", "/score"): create_score,
        ("POST", "/v1/score"): create_score,
        ("POST", "/rerank"): create_rerank,
        ("POST", "/v1/rerank"): create_rerank,
        ("POST", "/v2/rerank"): create_rerank,
        ("POST", "/v2/embed"): create_cohere_embed,
        ("POST", "/tokenize"): tokenize,
        ("POST", "/detokenize"): detokenize,
        ("GET", "/v1/models"): list_models,
        ("GET", "/health"): health,
        ("GET", "/ping"): health,  # SageMaker's health check
        ("POST", "/ping"): health,
        ("GET", "/load"): load,
        ("GET", "/version"): version,
        ("GET", "/metrics"): metrics,
        ("GET", "/openapi.json"): openapi_json,
        ("GET", "/docs"): docs,
    }
