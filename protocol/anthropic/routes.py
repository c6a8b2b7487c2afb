"""The Anthropic Messages API's routes, their failures in Anthropic's error shape."""

from __future__ import annotations

from typing import Any

from protocol.anthropic.errors import anthropic_errors
from protocol.anthropic.handlers import count_tokens, create_message
from protocol.anthropic.schemas import (
    AnthropicError,
    CountTokensRequest,
    CountTokensResponse,
    MessagesRequest,
    MessagesResponse,
)
from protocol.openapi import SchemaBuilder, ref
from protocol.route import Route


def _stream_event(builder: SchemaBuilder) -> dict[str, Any]:
    """Each event's data: an object whose `type` names it (message_start, ...)."""
    return {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}


def _error(builder: SchemaBuilder) -> dict[str, Any]:
    """Anthropic's error body; OpenAI's from the HTTP layer in front (401, 413)."""
    return {"anyOf": [builder.component(AnthropicError, "response"), ref("Error")]}


ROUTES = [
    Route(
        "POST",
        "/v1/messages",
        anthropic_errors(create_message),
        "Create a message (Anthropic Messages API)",
        "anthropic",
        MessagesRequest,
        MessagesResponse,
        _stream_event,
        error=_error,
    ),
    Route(
        "POST",
        "/v1/messages/count_tokens",
        anthropic_errors(count_tokens),
        "Count a message request's input tokens (Anthropic Messages API)",
        "anthropic",
        CountTokensRequest,
        CountTokensResponse,
        error=_error,
    ),
]
