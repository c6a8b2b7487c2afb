"""POST /v1/chat/completions: request, response and stream chunk, in vLLM's JSON shapes."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.schemas_common import OMITTED_IF_NONE, GenerationRequest, UsageInfo


@attrs.frozen
class ChatContentPart:
    # Only "text" parts are rendered; the chat template layer rejects other types with a 400.
    type: str
    text: str | None = None


# A message's content is a string or OpenAI's list of parts (hook in converter.py).
MessageContent = str | list[ChatContentPart]


@attrs.frozen
class ChatMessageParam:
    """One input message. Only what chat templates read is kept; other keys are ignored."""

    role: str
    content: MessageContent | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@attrs.frozen(kw_only=True)
class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageParam]
    # Deprecated by OpenAI in favour of max_completion_tokens, which wins when both are set.
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None


@attrs.frozen(kw_only=True)
class ChatMessage:
    role: str
    content: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = attrs.field(factory=list)
    reasoning: str | None = None


@attrs.frozen(kw_only=True)
class ChatCompletionResponseChoice:
    index: int
    message: ChatMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


@attrs.frozen(kw_only=True)
class ChatCompletionResponse:
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    prompt_logprobs: list[Any] | None = None
    prompt_token_ids: list[int] | None = None
    kv_transfer_params: dict[str, Any] | None = None


@attrs.frozen
class DeltaMessage:
    # Both omitted when None: the role chunk is {"role","content":""}, text chunks {"content"},
    # and a finish chunk with no text left is {}.
    role: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    content: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)


@attrs.frozen(kw_only=True)
class ChatCompletionResponseStreamChoice:
    index: int
    delta: DeltaMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@attrs.frozen(kw_only=True)
class ChatCompletionStreamResponse:
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
