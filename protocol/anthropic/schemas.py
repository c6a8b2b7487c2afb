"""The Anthropic Messages API's shapes: request, message, count_tokens, stream events, error."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import bounded, documented
from protocol.generation.request_schemas import OMITTED_IF_NONE

# A block's fields depend on its type (text, tool_use, tool_result); conversation.py reads
# them, with messages that name the block.
ContentBlocks = str | list[dict[str, Any]]


@attrs.frozen(kw_only=True)
class AnthropicMessageParam:
    role: str = documented(attrs.NOTHING, enum=["user", "assistant"])
    content: ContentBlocks


@attrs.frozen(kw_only=True)
class AnthropicTool:
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = attrs.field(factory=lambda: {"type": "object"})


@attrs.frozen(kw_only=True)
class AnthropicToolChoice:
    type: str = documented(attrs.NOTHING, enum=["auto", "any", "tool", "none"])
    name: str | None = None  # "tool": the one to call
    disable_parallel_tool_use: bool | None = None


@attrs.frozen(kw_only=True)
class CountTokensRequest:
    """POST /v1/messages/count_tokens: what the prompt would be, without generating."""

    model: str | None = None
    messages: list[AnthropicMessageParam] = documented(attrs.NOTHING, minItems=1)
    system: ContentBlocks | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    # {"type": "enabled" | "disabled", "budget_tokens"}: "disabled" turns a reasoning model's
    # thinking off (enable_thinking: false in its template); otherwise it thinks as it would.
    thinking: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's extra, as in chat


@attrs.frozen(kw_only=True)
class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: int = bounded(attrs.NOTHING, minimum=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = bounded(minimum=0)
    top_p: float | None = bounded(exclusive_minimum=0, maximum=1)
    top_k: int | None = bounded(minimum=0)
    metadata: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class TextBlock:
    type: str = "text"
    text: str


@attrs.frozen(kw_only=True)
class ToolUseBlock:
    type: str = "tool_use"
    id: str  # toolu_<hex>
    name: str
    input: dict[str, Any]


@attrs.frozen(kw_only=True)
class ThinkingBlock:
    """The model's thinking, split from its answer by the server's reasoning parser."""

    type: str = "thinking"
    thinking: str
    signature: str  # opaque to clients; this server does not check it when it comes back


ContentBlock = ThinkingBlock | TextBlock | ToolUseBlock


@attrs.frozen(kw_only=True)
class AnthropicUsage:
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)


@attrs.frozen(kw_only=True)
class MessagesResponse:
    id: str  # msg_<hex>
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[ContentBlock]
    # "end_turn" | "max_tokens" | "stop_sequence" | "tool_use"; null while streaming
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


@attrs.frozen(kw_only=True)
class CountTokensResponse:
    input_tokens: int


@attrs.frozen(kw_only=True)
class AnthropicErrorDetail:
    type: str  # invalid_request_error, not_found_error, rate_limit_error, api_error, ...
    message: str


@attrs.frozen(kw_only=True)
class AnthropicError:
    type: str = "error"
    error: AnthropicErrorDetail
