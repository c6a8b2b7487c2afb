"""The OpenAI API's routes: completions, chat completions (and their render-only forms),
models."""

from __future__ import annotations

from typing import Any

from protocol.openai.chat import create_chat_completion
from protocol.openai.chat_batch import create_batch_chat_completion
from protocol.openai.chat_schemas import (
    BatchChatCompletionRequest,
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
from protocol.openai.render import render_chat_completion, render_completion
from protocol.openai.render_schemas import GenerateRequest
from protocol.openapi import SchemaBuilder
from protocol.route import Route


def _one_per_prompt(builder: SchemaBuilder) -> dict[str, Any]:
    return {"type": "array", "items": builder.component(GenerateRequest, "response")}


ROUTES = [
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
        "/v1/chat/completions/batch",
        create_batch_chat_completion,
        "Several conversations in one request, one choice each (no streaming or tools)",
        "generation",
        BatchChatCompletionRequest,
        ChatCompletionResponse,
    ),
    Route(
        "POST",
        "/v1/completions/render",
        render_completion,
        "The token-in requests a completion would submit, without generating",
        "generation",
        CompletionRequest,
        _one_per_prompt,
    ),
    Route(
        "POST",
        "/v1/chat/completions/render",
        render_chat_completion,
        "The token-in request a chat completion would submit, without generating",
        "generation",
        ChatCompletionRequest,
        GenerateRequest,
    ),
    Route("GET", "/v1/models", list_models, "The served models", "models", None, ModelList),
]
