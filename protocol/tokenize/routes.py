"""The tokenizer's routes: /tokenize, /detokenize and /tokenizer_info."""

from __future__ import annotations

from typing import Any

from protocol.openapi import SchemaBuilder
from protocol.route import Route
from protocol.tokenize.handlers import detokenize, tokenize, tokenizer_info
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
        "GET",
        "/tokenizer_info",
        tokenizer_info,
        "The tokenizer's configuration (with enable_tokenizer_info_endpoint)",
        "tokenization",
        None,
        "TokenizerInfo",
        query={"model": {"type": "string"}},
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
