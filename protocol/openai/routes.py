"""The OpenAI API's routes: completions, chat completions, models."""

from __future__ import annotations

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
from protocol.route import Route

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
    Route("GET", "/v1/models", list_models, "The served models", "models", None, ModelList),
]
