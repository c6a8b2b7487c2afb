"""A Responses request as the chat request it amounts to, and a chat reply as output items.

Input items become chat messages (a stored conversation's first, when continuing one), tools
and text.format become the chat request's tools and response_format; the chat path then does
everything else: template, validation, tool-call parsing, structured output.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.generation.request_schemas import (
    GenerationRequest,
    JsonSchemaFormat,
    ResponseFormat,
)
from protocol.http import bad_request
from protocol.openai.chat_schemas import (
    ChatCompletionRequest,
    ChatContentPart,
    ChatMessage,
    ChatMessageParam,
    ChatTool,
    FunctionDefinition,
)
from protocol.responses.schemas import (
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponsesRequest,
    TextFormat,
)

_TEXT_PARTS = ("input_text", "output_text", "text")
_ROLES = ("user", "assistant", "system", "developer")


def _content(content: Any, param: str) -> str | list[ChatContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("content must be a string or a list of content parts.", param)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise bad_request(
                f"Unsupported content part {kind!r}: this server reads text parts "
                "(input_text, output_text).",
                f"{param}[{j}]",
            )
        parts.append(ChatContentPart(type="text", text=part["text"]))
    return parts


def input_messages(items: str | list[dict[str, Any]]) -> list[ChatMessageParam]:
    """The chat messages that `input` holds (a string is one user message)."""
    if isinstance(items, str):
        return [ChatMessageParam(role="user", content=items)]
    messages: list[ChatMessageParam] = []
    thoughts: str | None = None  # a reasoning item's text, for the assistant turn it precedes
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "reasoning":
            thoughts = _reasoning_text(item, param)
            continue
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise bad_request(f"A message's role must be one of {list(_ROLES)}.", param)
            # Chat templates know system prompts; a developer message is one.
            role = "system" if role == "developer" else role
            content = _content(item.get("content"), f"{param}.content")
            messages.append(ChatMessageParam(role=role, content=content))
        elif kind == "function_call":
            call = _function_call(item, param)
            previous = messages[-1] if messages else None
            if previous is not None and previous.role == "assistant" and previous.tool_calls:
                # Parallel calls of one turn: one assistant message holds them all.
                calls = [*previous.tool_calls, call]
                messages[-1] = attrs.evolve(previous, tool_calls=calls)
            else:
                messages.append(ChatMessageParam(role="assistant", content="", tool_calls=[call]))
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise bad_request("A function_call_output needs call_id and output strings.", param)
            messages.append(ChatMessageParam(role="tool", content=output, tool_call_id=call_id))
        else:
            raise bad_request(
                f"Unsupported input item type {kind!r}: this server reads message, "
                "reasoning, function_call and function_call_output items.",
                param,
            )
        if thoughts is not None and messages[-1].role == "assistant":
            # The thinking goes back to the template on the turn it led to, as chat's
            # `reasoning` field does.
            messages[-1] = attrs.evolve(messages[-1], reasoning=thoughts)
        thoughts = None
    return messages


def _reasoning_text(item: dict[str, Any], param: str) -> str:
    """A reasoning item's thinking: its reasoning_text parts, else its summary's text."""
    for field in ("content", "summary"):
        parts = item.get(field) or []
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
        ):
            raise bad_request(f"A reasoning item's {field} is a list of text parts.", param)
        if parts:
            return "".join(p["text"] for p in parts)
    return ""


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not all(isinstance(v, str) for v in (call_id, name, arguments)):
        raise bad_request("A function_call needs call_id, name and arguments strings.", param)
    return _tool_call(call_id, name, arguments)


def _tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A call as chat messages hold it (what chat templates read)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_choice(choice: Any) -> Any:
    """Responses name a forced function at the top level; chat nests it under "function"."""
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _response_format(text_format: TextFormat | None) -> ResponseFormat | None:
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_schema" and text_format.schema is None:
        raise bad_request("text.format of type json_schema needs a schema.", "text.format.schema")
    schema = None
    if text_format.type == "json_schema":
        schema = JsonSchemaFormat(
            name=text_format.name,
            schema=text_format.schema,
            strict=text_format.strict,
            description=text_format.description,
        )
    return ResponseFormat(type=text_format.type, json_schema=schema)


def chat_request(
    req: ResponsesRequest, conversation: list[ChatMessageParam]
) -> ChatCompletionRequest:
    """The chat request `req` amounts to: its instructions, then `conversation` (a stored
    one continued, then `req.input`'s messages)."""
    shared = {f.name: getattr(req, f.name) for f in attrs.fields(GenerationRequest)}
    messages = []
    if req.instructions:
        messages.append(ChatMessageParam(role="system", content=req.instructions))
    messages += conversation
    if not messages:
        raise bad_request("input must hold at least one item.", "input")
    tools = None
    if req.tools is not None:
        tools = [
            ChatTool(
                type=t.type,
                function=FunctionDefinition(
                    name=t.name, description=t.description, parameters=t.parameters, strict=t.strict
                ),
            )
            for t in req.tools
        ]
    text_format = req.text.format if req.text is not None else None
    shared.update(
        stream=False,
        stream_options=None,
        response_format=_response_format(text_format) or req.response_format,
    )
    return ChatCompletionRequest(
        **shared,
        messages=messages,
        tools=tools,
        # Unset ("auto") means "none" when there are no tools, as in chat.
        tool_choice=_tool_choice(req.tool_choice) if tools or req.tool_choice != "auto" else None,
        parallel_tool_calls=req.parallel_tool_calls,
        max_tokens=req.max_output_tokens,
        logprobs=req.top_logprobs is not None,
        top_logprobs=req.top_logprobs,
        chat_template_kwargs=req.chat_template_kwargs,
    )


def output_items(
    message: ChatMessage, make_id: Any, logprobs: list[dict[str, Any]]
) -> list[OutputItem]:
    """A chat reply as output items: its thinking, its text as one message, then one item per
    tool call."""
    items: list[OutputItem] = []
    if message.reasoning:
        thinking = ReasoningText(text=message.reasoning)
        items.append(ReasoningItem(id=make_id("rs"), content=[thinking]))
    if message.content:
        text = OutputText(text=message.content, logprobs=logprobs)
        items.append(OutputMessage(id=make_id("msg"), content=[text]))
    for call in message.tool_calls:
        items.append(
            FunctionCallItem(
                id=make_id("fc"),
                call_id=call.id,
                name=call.function.name,
                arguments=call.function.arguments,
            )
        )
    return items


def as_messages(items: list[OutputItem]) -> list[ChatMessageParam]:
    """Output items as the assistant turn a continuation reads back."""
    replies = [item for item in items if isinstance(item, OutputMessage)]
    text = "".join(part.text for reply in replies for part in reply.content)
    calls = [
        _tool_call(item.call_id, item.name, item.arguments)
        for item in items
        if isinstance(item, FunctionCallItem)
    ]
    thoughts = "".join(
        part.text for item in items if isinstance(item, ReasoningItem) for part in item.content
    )
    return [
        ChatMessageParam(
            role="assistant", content=text, tool_calls=calls or None, reasoning=thoughts or None
        )
    ]
