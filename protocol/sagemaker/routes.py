"""SageMaker's routes: POST /invocations (its /ping is an operational route)."""

from __future__ import annotations

from typing import Any

from protocol.openai.chat_schemas import ChatCompletionResponse, ChatCompletionStreamResponse
from protocol.openai.completion_schemas import CompletionResponse, CompletionStreamResponse
from protocol.openapi import SchemaBuilder
from protocol.pooling.schemas import ClassifyResponse, EmbeddingResponse, PoolingResponse
from protocol.pooling.score_schemas import RerankResponse, ScoreResponse
from protocol.route import Route
from protocol.sagemaker.invocations import INVOCATIONS, invocations

_RESPONSES = (
    ChatCompletionResponse,
    CompletionResponse,
    EmbeddingResponse,
    ClassifyResponse,
    ScoreResponse,
    RerankResponse,
    PoolingResponse,
)


def _any_of(*classes: type, side: str) -> Any:
    def schema(builder: SchemaBuilder) -> dict[str, Any]:
        return {"anyOf": [builder.component(cls, side) for cls in classes]}

    return schema


ROUTES = [
    Route(
        "POST",
        "/invocations",
        invocations,
        "SageMaker: the body is served by the first API whose request it fits",
        "sagemaker",
        _any_of(*(i.request for i in INVOCATIONS), side="request"),
        _any_of(*_RESPONSES, side="response"),
        _any_of(ChatCompletionStreamResponse, CompletionStreamResponse, side="response"),
    ),
]
