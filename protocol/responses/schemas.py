"""The OpenAI Responses API's shapes: the request, the response object and its output items,
and the stream's events."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import documented
from protocol.generation.request_schemas import OMITTED_IF_NONE, GenerationRequest


@attrs.frozen(kw_only=True)
class FunctionTool:
    """A function the model may call (the Responses form: name and schema at the top level)."""

    type: str = documented("function", enum=["function"])
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    strict: bool | None = None


@attrs.frozen(kw_only=True)
class TextFormat:
    type: str = documented("text", enum=["text", "json_object", "json_schema"])
    name: str | None = None  # json_schema: the schema's name
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


@attrs.frozen(kw_only=True)
class TextConfig:
    format: TextFormat | None = None


@attrs.frozen(kw_only=True)
class ResponsesRequest(GenerationRequest):
    """POST /v1/responses. The sampling fields are the chat request's (vLLM's extras too)."""

    # A string (one user message) or a list of input items: messages ({"role", "content"}),
    # function_call and function_call_output items (read in conversation.py).
    input: str | list[dict[str, Any]]
    instructions: str | None = None  # a system message; never carried to a continuation
    max_output_tokens: int | None = documented(minimum=1)
    tools: list[FunctionTool] | None = None
    tool_choice: Any = "auto"  # "none" | "auto" | "required" | {"type": "function", "name"}
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    top_logprobs: int | None = documented(minimum=0)
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    background: bool = False
    truncation: str | None = "disabled"
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class OutputText:
    type: str = "output_text"
    text: str
    annotations: list[Any] = attrs.field(factory=list)
    logprobs: list[dict[str, Any]] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class OutputMessage:
    id: str  # msg_<hex>
    type: str = "message"
    role: str = "assistant"
    status: str = "completed"
    content: list[OutputText]


@attrs.frozen(kw_only=True)
class FunctionCallItem:
    id: str  # fc_<hex>
    type: str = "function_call"
    call_id: str  # what the function_call_output answering it names
    name: str
    arguments: str  # a JSON object as text
    status: str = "completed"


@attrs.frozen(kw_only=True)
class ReasoningText:
    type: str = "reasoning_text"
    text: str


@attrs.frozen(kw_only=True)
class ReasoningItem:
    """The model's thinking, split from its answer by the server's reasoning parser."""

    id: str  # rs_<hex>
    type: str = "reasoning"
    summary: list[Any] = attrs.field(factory=list)  # this server writes no summaries
    content: list[ReasoningText]
    status: str = "completed"


OutputItem = ReasoningItem | OutputMessage | FunctionCallItem


@attrs.frozen(kw_only=True)
class ResponseUsage:
    input_tokens: int
    input_tokens_details: dict[str, int]  # {"cached_tokens"}
    output_tokens: int
    output_tokens_details: dict[str, int]  # {"reasoning_tokens"}
    total_tokens: int


@attrs.frozen(kw_only=True)
class ResponseObject:
    id: str  # resp_<hex>
    object: str = "response"
    created_at: int
    model: str
    status: str  # "in_progress" | "completed" | "incomplete" | "failed"
    output: list[OutputItem]
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str] | None
    parallel_tool_calls: bool
    previous_response_id: str | None
    temperature: float | None
    top_p: float | None
    tool_choice: Any
    tools: list[FunctionTool]
    text: TextConfig
    truncation: str | None
    store: bool
    background: bool = False
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None  # {"reason": "max_output_tokens"}
    usage: ResponseUsage | None = None
    user: str | None = None


@attrs.frozen(kw_only=True)
class ResponseStreamEvent:
    """One server-sent event of a streamed response: its `type` names which of the other
    fields it carries (response.created, response.output_text.delta, ...)."""

    type: str
    sequence_number: int
    response: ResponseObject | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    output_index: int | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    item: OutputItem | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    item_id: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    content_index: int | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    part: OutputText | ReasoningText | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    delta: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    text: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    arguments: str | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    logprobs: list[dict[str, Any]] | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)


@attrs.frozen(kw_only=True)
class DeletedResponse:
    id: str
    object: str = "response"
    deleted: bool = True
