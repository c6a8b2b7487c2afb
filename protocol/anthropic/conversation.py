"""An Anthropic Messages request as the chat request it amounts to, and a chat reply as
Anthropic content blocks.

System text becomes a system message; a user turn's tool_result blocks become tool messages
(before its text, as Anthropic orders them); an assistant turn's tool_use blocks become its
tool calls. Tools and tool_choice map onto chat's, so the chat path does everything else.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from protocol.anthropic.schemas import (
    AnthropicTool,
    AnthropicToolChoice,
    AnthropicUsage,
    ContentBlock,
    ContentBlocks,
    CountTokensRequest,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)
from protocol.http import bad_request
from protocol.openai.chat_schemas import (
    ChatCompletionRequest,
    ChatMessage,
    ChatMessageParam,
    ChatTool,
    FunctionDefinition,
)


def _block_text(block: dict[str, Any], param: str) -> str:
    if block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise bad_request(
            f"Unsupported content block {block.get('type')!r} here: this server reads text, "
            "tool_use (assistant) and tool_result (user) blocks.",
            param,
        )
    return block["text"]


def _text(content: ContentBlocks, param: str) -> str:
    """A string, or text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(_block_text(block, f"{param}[{i}]") for i, block in enumerate(content))


def system_text(system: ContentBlocks | None) -> str | None:
    return None if system is None else _text(system, "system")


def _tool_result(block: dict[str, Any], param: str) -> ChatMessageParam:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise bad_request("A tool_result block needs its tool_use_id.", param)
    content = block.get("content", "")
    text = _text(content, f"{param}.content") if isinstance(content, str | list) else ""
    return ChatMessageParam(role="tool", content=text, tool_call_id=tool_use_id)


def _tool_use(block: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, dict):
        raise bad_request("A tool_use block needs id, name and an input object.", param)
    arguments_json = orjson.dumps(arguments).decode()
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments_json},
    }


def chat_messages(req: CountTokensRequest) -> list[ChatMessageParam]:
    messages = []
    system = system_text(req.system)
    if system:
        messages.append(ChatMessageParam(role="system", content=system))
    if not req.messages:
        raise bad_request("messages must hold at least one message.", "messages")
    for i, message in enumerate(req.messages):
        if message.role not in ("user", "assistant"):
            raise bad_request("A message's role is user or assistant.", f"messages[{i}].role")
        param = f"messages[{i}].content"
        if isinstance(message.content, str):
            messages.append(ChatMessageParam(role=message.role, content=message.content))
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        thoughts: list[str] = []
        for j, block in enumerate(message.content):
            kind = block.get("type")
            if kind == "tool_result" and message.role == "user":
                messages.append(_tool_result(block, f"{param}[{j}]"))
            elif kind == "tool_use" and message.role == "assistant":
                calls.append(_tool_use(block, f"{param}[{j}]"))
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                thoughts.append(block["thinking"])  # back to the template, as chat's reasoning
            elif kind == "redacted_thinking":
                continue  # opaque data: nothing a template could read
            else:
                texts.append(_block_text(block, f"{param}[{j}]"))
        if texts or calls or thoughts:
            messages.append(
                ChatMessageParam(
                    role=message.role,
                    content="".join(texts),
                    tool_calls=calls or None,
                    reasoning="".join(thoughts) or None,
                )
            )
    return messages


def _chat_tools(tools: list[AnthropicTool] | None) -> list[ChatTool] | None:
    if tools is None:
        return None
    return [
        ChatTool(
            function=FunctionDefinition(
                name=tool.name, description=tool.description, parameters=tool.input_schema
            )
        )
        for tool in tools
    ]


def _chat_tool_choice(choice: AnthropicToolChoice | None) -> Any:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise bad_request("tool_choice of type tool needs the tool's name.", "tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    chat_choice = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type)
    if chat_choice is None:
        raise bad_request(
            f"Unknown tool_choice type {choice.type!r}: auto, any, tool or none.",
            "tool_choice.type",
        )
    return chat_choice


def chat_request(req: CountTokensRequest) -> ChatCompletionRequest:
    """The chat request `req` amounts to (sampling fields only when it is a MessagesRequest)."""
    sampling: dict[str, Any] = {}
    if isinstance(req, MessagesRequest):
        sampling = {
            "max_tokens": req.max_tokens,
            "stop": req.stop_sequences,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_k": req.top_k,
        }
    parallel = not (req.tool_choice is not None and req.tool_choice.disable_parallel_tool_use)
    return ChatCompletionRequest(
        model=req.model,
        messages=chat_messages(req),
        tools=_chat_tools(req.tools),
        tool_choice=_chat_tool_choice(req.tool_choice),
        parallel_tool_calls=parallel,
        chat_template_kwargs=_template_kwargs(req),
        **sampling,
    )


def _template_kwargs(req: CountTokensRequest) -> dict[str, Any] | None:
    """The request's chat_template_kwargs, with enable_thinking false when thinking is
    disabled (unless the kwargs say otherwise)."""
    kind = req.thinking.get("type") if req.thinking is not None else None
    if kind not in (None, "enabled", "disabled", "adaptive"):
        raise bad_request(
            f"Unknown thinking type {kind!r}: enabled, disabled or adaptive.", "thinking.type"
        )
    kwargs = dict(req.chat_template_kwargs or {})
    if kind == "disabled":
        kwargs.setdefault("enable_thinking", False)
    return kwargs or None


def content_blocks(message: ChatMessage) -> list[ContentBlock]:
    """A chat reply as Anthropic blocks: its thinking, its text, then one tool_use per call."""
    blocks: list[ContentBlock] = []
    if message.reasoning:
        blocks.append(ThinkingBlock(thinking=message.reasoning, signature=thinking_signature()))
    if message.content:
        blocks.append(TextBlock(text=message.content))
    for call in message.tool_calls:
        blocks.append(
            ToolUseBlock(
                id=f"toolu_{uuid.uuid4().hex[:24]}",
                name=call.function.name,
                input=_arguments(call.function.arguments),
            )
        )
    return blocks


def thinking_signature() -> str:
    return uuid.uuid4().hex


def _arguments(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def stop_reason(
    finish_reason: str, engine_stop: str | int | None, called: bool
) -> tuple[str, str | None]:
    """(Anthropic's stop_reason, the stop sequence that matched)."""
    if called:
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if isinstance(engine_stop, str):
        return "stop_sequence", engine_stop
    return "end_turn", None


def anthropic_usage(
    num_prompt_tokens: int, num_output_tokens: int, num_cached_tokens: int
) -> AnthropicUsage:
    return AnthropicUsage(
        input_tokens=num_prompt_tokens,
        output_tokens=num_output_tokens,
        cache_read_input_tokens=num_cached_tokens,
    )
