"""POST /v1/chat/completions: request, response and stream chunk, in vLLM's JSON shapes."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import documented
from protocol.generation.request_schemas import OMITTED_IF_NONE, GenerationRequest, UsageInfo


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
    # An assistant turn's thinking, as a reply gave it (`reasoning_content`: its older name).
    reasoning: str | None = None
    reasoning_content: str | None = None


@attrs.frozen(kw_only=True)
class FunctionDefinition:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    strict: bool | None = None


@attrs.frozen(kw_only=True)
class ChatTool:
    type: str = documented("function", enum=["function"])  # the only kind of tool there is
    function: FunctionDefinition


@attrs.frozen(kw_only=True)
class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageParam]
    tools: list[ChatTool] | None = documented(minItems=1)
    # "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}; checked
    # in protocol/generation/tool_choice.py, whose messages are clearer than a union's. Unset:
    # "auto" when tools are given, else "none".
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    # Deprecated by OpenAI in favour of max_completion_tokens, which wins when both are set.
    max_tokens: int | None = documented(minimum=1)
    max_completion_tokens: int | None = documented(minimum=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    echo: bool = False  # the reply starts with the last message when it has the reply's role
    documents: list[dict[str, str]] | None = None  # for RAG templates
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    include_reasoning: bool = True  # false: a reasoning parser's split leaves the thinking out
    logprobs: bool | None = False
    top_logprobs: int | None = documented(minimum=0)  # at most max_logprobs (check_logprobs)


@attrs.frozen
class FunctionCall:
    name: str
    arguments: str  # a JSON object as text


@attrs.frozen(kw_only=True)
class ToolCall:
    id: str  # chatcmpl-tool-<16 hex>
    type: str = "function"
    function: FunctionCall


@attrs.frozen(kw_only=True)
class ChatMessage:
    role: str
    content: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    tool_calls: list[ToolCall] = attrs.field(factory=list)
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
class DeltaFunctionCall:
    name: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    arguments: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)


@attrs.frozen(kw_only=True)
class DeltaToolCall:
    """A piece of tool call `index`: the first carries id, type and name; later ones only more
    of the arguments text."""

    index: int
    id: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    type: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    function: DeltaFunctionCall


@attrs.frozen
class DeltaMessage:
    # All omitted when None: the role chunk is {"role","content":""}, text chunks {"content"},
    # and a finish chunk with no text left is {}.
    role: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    content: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    reasoning: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    tool_calls: list[DeltaToolCall] | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)


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


@attrs.frozen(kw_only=True)
class BatchChatCompletionRequest(ChatCompletionRequest):
    """POST /v1/chat/completions/batch: the chat request's fields, with `messages` a list of
    conversations; each becomes one choice, in order. No streaming, no tools, n = 1."""

    messages: list[list[ChatMessageParam]] = documented(  # type: ignore[assignment]
        attrs.NOTHING, minItems=1
    )
