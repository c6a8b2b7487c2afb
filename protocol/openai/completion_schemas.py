"""POST /v1/completions: request, response and stream chunk, in vLLM's JSON shapes."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import documented
from protocol.generation.request_schemas import (
    OMITTED_IF_NONE,
    GenerationRequest,
    Prompt,
    UsageInfo,
)


@attrs.frozen(kw_only=True)
class CompletionRequest(GenerationRequest):
    prompt: Prompt | None = None
    # 16 is OpenAI's and vLLM's completion default; an explicit null means "whatever fits".
    max_tokens: int | None = documented(16, minimum=1)
    echo: bool | None = False
    add_special_tokens: bool = True
    # Accepted so that clients sending them get a clear 400 rather than silent ignoring.
    logprobs: int | None = documented(minimum=0)  # at most max_logprobs (check_logprobs)
    suffix: str | None = None


@attrs.frozen(kw_only=True)
class CompletionResponseChoice:
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None
    prompt_logprobs: list[Any] | None = None
    prompt_token_ids: list[int] | None = None


@attrs.frozen(kw_only=True)
class CompletionResponse:
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseChoice]
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    kv_transfer_params: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class CompletionResponseStreamChoice:
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@attrs.frozen(kw_only=True)
class CompletionStreamResponse:
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseStreamChoice]
    usage: UsageInfo | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
