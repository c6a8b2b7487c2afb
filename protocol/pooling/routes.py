"""The pooling APIs' routes: embeddings, pooling, classify, score, rerank, Cohere's embed."""

from __future__ import annotations

import functools
from typing import Any

from protocol.openai.chat_schemas import ChatMessageParam
from protocol.openapi import SchemaBuilder, ref
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


def _input_or_messages(cls: type, builder: SchemaBuilder) -> dict[str, Any]:
    """The body schema: `input` or chat `messages`, exactly one of them (inputs.py)."""
    base = cls.__name__.removesuffix("Request")
    with_input = builder.component(
        cls,
        "request",
        name=f"{base}RequestWithInput",
        overrides={"input": ref("Prompt"), "messages": {"type": "null"}},
        required=("input",),
    )
    with_messages = builder.component(
        cls,
        "request",
        name=f"{base}RequestWithMessages",
        overrides={
            "input": {"type": "null"},
            "messages": {
                "type": "array",
                "items": builder.component(ChatMessageParam, "request"),
                "minItems": 1,
            },
        },
        required=("messages",),
    )
    return {"oneOf": [with_input, with_messages]}


def _pooling(path: str, handler: Any, summary: str, request: type, response: type) -> Route:
    body = functools.partial(_input_or_messages, request)
    return Route("POST", path, handler, summary, "pooling", body, response)


def _score(path: str) -> Route:
    summary = "Score text pairs"
    return Route("POST", path, create_score, summary, "pooling", ScoreRequest, ScoreResponse)


def _rerank(path: str) -> Route:
    summary = "Rerank documents by a query"
    return Route("POST", path, create_rerank, summary, "pooling", RerankRequest, RerankResponse)


ROUTES = [
    _pooling(
        "/v1/embeddings", create_embedding, "Create embeddings", EmbeddingRequest, EmbeddingResponse
    ),
    _pooling(
        "/pooling", create_pooling, "The model's pooled output", PoolingRequest, PoolingResponse
    ),
    _pooling("/classify", classify, "Classify inputs", ClassifyRequest, ClassifyResponse),
    _score("/score"),
    _score("/v1/score"),
    _rerank("/rerank"),
    _rerank("/v1/rerank"),
    _rerank("/v2/rerank"),
    Route(
        "POST",
        "/v2/embed",
        create_cohere_embed,
        "Embed texts (Cohere Embed v2)",
        "pooling",
        CohereEmbedRequest,
        CohereEmbedResponse,
    ),
]
