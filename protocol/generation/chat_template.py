"""Chat messages → prompt text through a Jinja chat template, rendered the way transformers does.

Same environment as Hugging Face's `apply_chat_template` (sandboxed, trim_blocks/lstrip_blocks,
loopcontrols, raise_exception, strftime_now, a `tojson` that keeps non-ASCII, the
`{% generation %}` tag) so that a model's own template renders here as it does there.
Templates are compiled once per source string. Every template failure is the client's 400.

A request may bring its own template (`chat_template`) only where the server trusts them
(`trust_request_chat_template`, as in vLLM); such a template renders under limits
(protocol/generation/template_limits.py).
"""

from __future__ import annotations

import codecs
import functools
import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from protocol.generation.template_limits import LimitedEnvironment, render_limited
from protocol.http import HTTPError
from protocol.openai.chat_schemas import ChatContentPart, ChatMessageParam, ChatTool

if TYPE_CHECKING:
    from configs.settings import Settings
    from protocol.served_model import ServedModel

ContentFormat = Literal["string", "openai"]

UNTRUSTED_TEMPLATE_MESSAGE = (
    "Chat template is passed with request, but --trust-request-chat-template is not set. "
    "Refused request with untrusted chat template."
)
# A request's own template: how long it may render, and how much the process may grow meanwhile.
REQUEST_TEMPLATE_TIMEOUT_S = 5.0
REQUEST_TEMPLATE_MEMORY_BYTES = 1 << 30

NO_TEMPLATE_MESSAGE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must "
    "provide a chat template if the tokenizer does not define one."
)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML and non-ASCII; templates expect plain json.dumps.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks in
    transformers; for inference it only renders its body, but templates using it must compile."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _environment(
    kind: type[ImmutableSandboxedEnvironment] = ImmutableSandboxedEnvironment,
) -> ImmutableSandboxedEnvironment:
    env = kind(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()
_REQUEST_ENV = _environment(LimitedEnvironment)


def _template_error(exc: Exception) -> HTTPError:
    return HTTPError(400, f"Chat template error: {exc}", "BadRequestError")


@functools.lru_cache(maxsize=32)
def compile_template(source: str, from_request: bool = False) -> jinja2.Template:
    try:
        return (_REQUEST_ENV if from_request else _ENV).from_string(source)
    except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
        raise _template_error(exc) from None


def _is_content_expr(node: jinja2.nodes.Node, content_names: set[str]) -> bool:
    if isinstance(node, jinja2.nodes.Getitem):
        return isinstance(node.arg, jinja2.nodes.Const) and node.arg.value == "content"
    if isinstance(node, jinja2.nodes.Getattr):
        return node.attr == "content"
    return isinstance(node, jinja2.nodes.Name) and node.name in content_names


@functools.lru_cache(maxsize=32)
def content_format(source: str) -> ContentFormat:
    """ "openai" when the template loops over a message's content (it wants the list of parts),
    else "string" (parts are joined). vLLM's "auto" detection, in short."""
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateError as exc:
        raise _template_error(exc) from None
    # `{% set content = message['content'] %}` then `{% for part in content %}` counts too.
    content_names = {
        assign.target.name
        for assign in ast.find_all(jinja2.nodes.Assign)
        if isinstance(assign.target, jinja2.nodes.Name) and _is_content_expr(assign.node, set())
    }
    for loop in ast.find_all(jinja2.nodes.For):
        if _is_content_expr(loop.iter, content_names):
            return "openai"
    return "string"


def _text_parts(parts: list[ChatContentPart], index: int) -> list[str]:
    texts: list[str] = []
    for part_index, part in enumerate(parts):
        param = f"messages[{index}].content[{part_index}]"
        if part.type != "text":
            raise HTTPError(
                400,
                f"Unsupported content part type {part.type!r}: only text parts are supported.",
                "BadRequestError",
                param,
            )
        if part.text is None:
            raise HTTPError(400, "A text content part needs `text`.", "BadRequestError", param)
        texts.append(part.text)
    return texts


def _message_dict(msg: ChatMessageParam, index: int, fmt: ContentFormat) -> dict[str, Any]:
    content: Any
    if isinstance(msg.content, list):
        texts = _text_parts(msg.content, index)
        content = (
            "\n".join(texts) if fmt == "string" else [{"type": "text", "text": t} for t in texts]
        )
    elif fmt == "openai":
        content = [] if msg.content is None else [{"type": "text", "text": msg.content}]
    else:
        # A missing content (e.g. an assistant turn with only tool calls) renders as "".
        content = msg.content or ""
    out: dict[str, Any] = {"role": msg.role, "content": content}
    for key in ("name", "tool_call_id"):
        value = getattr(msg, key)
        if value is not None:
            out[key] = value
    if msg.tool_calls is not None:
        out["tool_calls"] = [_template_tool_call(call) for call in msg.tool_calls]
    thought = msg.reasoning or msg.reasoning_content
    if thought is not None:  # templates read either name (Qwen3's: reasoning_content)
        out["reasoning"] = out["reasoning_content"] = thought
    return out


def _template_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sends a call's arguments as JSON text; templates (hermes, Llama 3, ...) expect the
    object, which they serialise themselves. Text that is not JSON is passed as it is."""
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call
    return {**call, "function": {**function, "arguments": arguments}}


def message_text(msg: ChatMessageParam) -> str:
    """A message's text, its parts joined by newlines as the "string" content format does."""
    if isinstance(msg.content, list):
        return "\n".join(part.text or "" for part in msg.content)
    return msg.content or ""


def _cut_after_final_message(rendered: str, messages: list[ChatMessageParam]) -> str:
    """The prompt ends inside the final message, so the model continues it (prefill) instead
    of the template closing the turn. As transformers does: cut after the message's text."""
    final = message_text(messages[-1]) if messages else ""
    for text in (final, final.strip()):
        if text and text in rendered:
            return rendered[: rendered.rindex(text) + len(text)]
    raise HTTPError(
        400,
        "continue_final_message is set, but the final message's content does not appear in the "
        "rendered chat template, so it cannot be continued.",
        "BadRequestError",
        "continue_final_message",
    )


def resolve_template(req: Any, model_template: str | None, trusted: bool) -> tuple[str, bool]:
    """The template to render and whether it came with the request (then only if trusted)."""
    request_template = req.chat_template or (req.chat_template_kwargs or {}).get("chat_template")
    if request_template is not None:
        if not trusted:
            raise HTTPError(400, UNTRUSTED_TEMPLATE_MESSAGE, "BadRequestError")
        return request_template, True
    if not model_template:
        raise HTTPError(400, NO_TEMPLATE_MESSAGE, "BadRequestError", "chat_template")
    return model_template, False


def render_chat(
    template: str,
    messages: list[ChatMessageParam],
    *,
    add_generation_prompt: bool,
    tokenizer: Any,
    chat_template_kwargs: dict[str, Any] | None = None,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
    documents: list[dict[str, str]] | None = None,
    content_format_setting: str = "auto",
    request_template_chars: int | None = None,
) -> str:
    """The prompt text for `messages`. Raises HTTPError(400) for any template failure.

    request_template_chars: set when the template came with the request: it renders under
    limits, its output at most this many characters."""
    if continue_final_message and add_generation_prompt:
        raise HTTPError(
            400,
            "Cannot set both continue_final_message and add_generation_prompt to True.",
            "BadRequestError",
            "continue_final_message",
        )
    from_request = request_template_chars is not None
    compiled = compile_template(template, from_request)
    fmt: ContentFormat
    if content_format_setting == "string" or content_format_setting == "openai":
        fmt = content_format_setting
    else:
        fmt = content_format(template)
    context: dict[str, Any] = {
        name: getattr(tokenizer, name, None)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    # Request kwargs may add variables (enable_thinking, ...) but not replace the conversation.
    context.update(chat_template_kwargs or {})
    context.update(
        messages=[_message_dict(m, i, fmt) for i, m in enumerate(messages)],
        add_generation_prompt=add_generation_prompt,
        tools=tools,
        documents=documents,
    )
    try:
        if request_template_chars is None:
            rendered = compiled.render(context)
        else:
            rendered = render_limited(
                compiled,
                context,
                timeout_s=REQUEST_TEMPLATE_TIMEOUT_S,
                max_chars=request_template_chars,
                max_memory_bytes=REQUEST_TEMPLATE_MEMORY_BYTES,
            )
    # A request may bring its own template: whatever it raises while rendering (1/0, a range
    # past the sandbox's limit, a limit above, endless recursion) is that request's mistake.
    except (
        jinja2.TemplateError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        ArithmeticError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise _template_error(exc) from None
    if continue_final_message:
        return _cut_after_final_message(rendered, messages)
    return rendered


def template_tools(tools: list[ChatTool] | None) -> list[dict[str, Any]] | None:
    """The tools as the chat template sees them: the request's JSON, unset fields left out."""
    if tools is None:
        return None
    return [
        {
            "type": tool.type,
            "function": {
                key: value
                for key, value in attrs.asdict(tool.function).items()
                if value is not None
            },
        }
        for tool in tools
    ]


def render_request(req: Any, served: ServedModel, settings: Settings) -> str:
    """The prompt text of a request's `messages`, rendered with the model's template and
    settings (or the request's own, where trusted). Chat completions, /tokenize and the pooling
    routes send the same chat fields; the pooling requests have no `tools` or `documents`."""
    template, from_request = resolve_template(
        req, served.chat_template, settings.trust_request_chat_template
    )
    return render_chat(
        template,
        req.messages,
        add_generation_prompt=req.add_generation_prompt,
        tokenizer=served.tokenizer,
        chat_template_kwargs=req.chat_template_kwargs,
        continue_final_message=req.continue_final_message,
        tools=template_tools(getattr(req, "tools", None)),
        documents=getattr(req, "documents", None),
        content_format_setting=served.chat_template_content_format,
        request_template_chars=settings.prompt_chars(served.max_model_len)
        if from_request
        else None,
    )


def load_chat_template(value: str) -> str:
    """A chat template setting: a path to a template file, or the template itself."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    if not any(c in value for c in "{}\n"):
        raise ValueError(
            f"The chat template {value!r} looks like a file path, but no such file exists."
        )
    # Inline templates often come from a command line or env var, where newlines arrive as the
    # two characters "\n"; decode escapes as vLLM does, keeping non-ASCII text intact.
    return codecs.decode(value.encode("latin-1", "backslashreplace"), "unicode_escape")
