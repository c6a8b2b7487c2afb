"""The route table: every served route, each declared once (protocol/route.py)."""

from __future__ import annotations

import functools

import attrs

from protocol.admission import engine_errors_as_http
from protocol.openai.chat import create_chat_completion
from protocol.openai.chat_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
)
from protocol.openai.completion_schemas import (
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
)
from protocol.openai.completions import create_completion
from protocol.openai.model_schemas import ModelList
from protocol.openai.models import list_models
from protocol.openapi import document_routes, pooling_forms, tokenize_forms
from protocol.operations.handlers import health, load, metrics, version
from protocol.pooling.classify import classify
from protocol.pooling.embeddings import create_cohere_embed, create_embedding, create_pooling
from protocol.pooling.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    CohereEmbedRequest,
    CohereEmbedResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingRequest,
    PoolingResponse,
)
from protocol.pooling.score import create_rerank, create_score
from protocol.pooling.score_schemas import (
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from protocol.route import Route
from protocol.tokenize.handlers import detokenize, tokenize
from protocol.tokenize.schemas import DetokenizeRequest, DetokenizeResponse, TokenizeResponse


def build_routes() -> list[Route]:
    served = _routes()
    routes = served + document_routes(served)
    # Every handler answers an engine's refusal (at capacity, dead) with its HTTP status.
    return [attrs.evolve(r, handler=engine_errors_as_http(r.handler)) for r in routes]


def _routes() -> list[Route]:
    def score(path: str) -> Route:
        return Route(
            "POST", path, create_score, "Score text pairs", "pooling", ScoreRequest, ScoreResponse
        )

    def rerank(path: str) -> Route:
        summary = "Rerank documents by a query"
        return Route("POST", path, create_rerank, summary, "pooling", RerankRequest, RerankResponse)

    def health_route(method: str, path: str) -> Route:
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

    return [
        Route(
            "POST",
            "/v1/completions",
            create_completion,
            "Create a completion",
            "generation",
            CompletionRequest,
            CompletionResponse,
            CompletionStreamResponse,
        ),
        Route(
            "POST",
            "/v1/chat/completions",
            create_chat_completion,
            "Create a chat completion",
            "generation",
            ChatCompletionRequest,
            ChatCompletionResponse,
            ChatCompletionStreamResponse,
        ),
        Route(
            "POST",
            "/v1/embeddings",
            create_embedding,
            "Create embeddings",
            "pooling",
            functools.partial(pooling_forms, EmbeddingRequest),
            EmbeddingResponse,
        ),
        Route(
            "POST",
            "/pooling",
            create_pooling,
            "The model's pooled output",
            "pooling",
            functools.partial(pooling_forms, PoolingRequest),
            PoolingResponse,
        ),
        Route(
            "POST",
            "/classify",
            classify,
            "Classify inputs",
            "pooling",
            functools.partial(pooling_forms, ClassifyRequest),
            ClassifyResponse,
        ),
        score("/score"),
        score("/v1/score"),
        rerank("/rerank"),
        rerank("/v1/rerank"),
        rerank("/v2/rerank"),
        Route(
            "POST",
            "/v2/embed",
            create_cohere_embed,
            "Embed texts (Cohere Embed v2)",
            "pooling",
            CohereEmbedRequest,
            CohereEmbedResponse,
        ),
        Route(
            "POST",
            "/tokenize",
            tokenize,
            "Tokenize a prompt or chat messages",
            "tokenization",
            tokenize_forms,
            TokenizeResponse,
        ),
        Route(
            "POST",
            "/detokenize",
            detokenize,
            "Token ids to text",
            "tokenization",
            DetokenizeRequest,
            DetokenizeResponse,
        ),
        Route(
            "GET", "/v1/models", list_models, "List the served models", "models", None, ModelList
        ),
        health_route("GET", "/health"),
        health_route("GET", "/ping"),  # SageMaker's health check
        health_route("POST", "/ping"),
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
