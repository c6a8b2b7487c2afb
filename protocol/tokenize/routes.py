"""The tokenizer's routes: /tokenize and /detokenize."""

from __future__ import annotations

from typing import Any

from protocol.openapi import SchemaBuilder
from protocol.route import Route
from protocol.tokenize.handlers import detokenize, tokenize
from protocol.tokenize.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
)


def _prompt_or_messages(builder: SchemaBuilder) -> dict[str, Any]:
    # The handler picks the chat form whenever the key `messages` is present, even as null.
    completion = builder.component(
        TokenizeCompletionRequest, "request", overrides={"messages": False}
    )
    return {"oneOf": [completion, builder.component(TokenizeChatRequest, "request")]}


ROUTES = [
    Route(
        "POST",
        "/tokenize",
        tokenize,
        "Tokenize a prompt or chat messages",
        "tokenization",
        _prompt_or_messages,
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
]
