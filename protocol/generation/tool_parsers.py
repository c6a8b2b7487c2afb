"""Model output → tool calls, streamed as OpenAI deltas or collected for a whole response.

One parser object follows one choice. `feed(text)` takes each new piece of output and returns
what can be sent now (content, tool-call deltas); `finish()` returns what was held back. A
non-streaming response feeds the whole text at once and reads `result()`, so both paths see the
very same parse.

Parsers, picked by the request's tool_choice (see protocol/generation/tool_choice.py):
- HermesToolParser ("auto" with the hermes parser setting): free text, in which each
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` is a call.
- RequiredToolParser ("required"): the output is a JSON array of {"name", "parameters"}
  objects, enforced by a grammar.
- NamedToolParser (a named function): the whole output is that function's arguments object,
  also enforced by a grammar.
Other model families' "auto" formats are classes beside this file (llama3_tool_parser.py,
mistral_tool_parser.py, pythonic_tool_parser.py, qwen3_xml_tool_parser.py) with the same
methods; tool_choice.py maps the tool_call_parser setting to them.
"""

from __future__ import annotations

import json
from typing import Protocol

import attrs

from protocol.generation.tool_call_scanner import ToolCallScanner
from protocol.openai.chat_schemas import (
    ChatTool,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from protocol.response_bodies import random_uuid


@attrs.define
class ParsedDelta:
    """What one piece of output adds to the stream."""

    content: str = ""
    tool_calls: list[DeltaToolCall] = attrs.field(factory=list)


class _Call(Protocol):
    name: str | None

    @property
    def done(self) -> bool: ...

    @property
    def arguments(self) -> str: ...


@attrs.define
class FixedCall:
    """The named tool choice's one call: the name is known before any output."""

    name: str | None
    text: list[str] = attrs.field(factory=list)
    done: bool = False

    @property
    def arguments(self) -> str:
        return "".join(self.text)


def new_tool_call_id() -> str:
    return f"chatcmpl-tool-{random_uuid()}"


class ToolParser:
    """Keeps the calls found so far and turns their growth into deltas."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel  # false: only the first call counts
        self.calls: list[_Call] = []
        self._ids: list[str] = []
        self._sent: list[int] = []  # characters of each call's arguments already sent
        self._content: list[str] = []  # content sent so far
        self._output: list[str] = []  # every piece fed

    @classmethod
    def for_request(cls, parallel: bool, tools: tuple[ChatTool, ...]) -> ToolParser:
        """A parser for one choice of a request with these tools (most formats ignore them)."""
        return cls(parallel)

    def feed(self, text: str) -> ParsedDelta:
        self._output.append(text)
        content = self._consume(text)
        self._content.append(content)
        return ParsedDelta(content, self._deltas())

    def finish(self) -> ParsedDelta:
        content = self._flush()
        self._content.append(content)
        return ParsedDelta(content, self._deltas())

    @property
    def called(self) -> bool:
        """Whether any tool call has been announced."""
        return bool(self._ids)

    def result(self) -> tuple[str | None, list[ToolCall]]:
        """The content and the complete, valid calls. A call cut short or with arguments that
        are not JSON makes the whole output plain content: nothing half-formed is reported as
        called."""
        calls = self.calls[:1] if not self.parallel else self.calls
        if calls and all(_valid(call) for call in calls):
            content = "".join(self._content) or None
            tool_calls = [
                ToolCall(id=self._ids[i], function=FunctionCall(call.name or "", call.arguments))
                for i, call in enumerate(calls)
            ]
            return content, tool_calls
        return self._content_without_calls(), []

    # What subclasses define: how output text maps to content and calls.

    def _consume(self, text: str) -> str:
        """Reads `text`, updating self.calls; returns the content it holds."""
        raise NotImplementedError

    def _flush(self) -> str:
        """The end of output: content held back, if any."""
        return ""

    def _content_without_calls(self) -> str | None:
        """The reply's content when the output holds no valid call."""
        return None

    def _deltas(self) -> list[DeltaToolCall]:
        deltas = []
        for index, call in enumerate(self.calls):
            if index > 0 and not self.parallel:
                break
            if call.name is None:
                break  # a call is announced with its name, and calls in order
            arguments = call.arguments
            if index == len(self._ids):
                self._ids.append(new_tool_call_id())
                self._sent.append(len(arguments))
                deltas.append(
                    DeltaToolCall(
                        index=index,
                        id=self._ids[index],
                        type="function",
                        function=DeltaFunctionCall(name=call.name, arguments=arguments),
                    )
                )
            elif len(arguments) > self._sent[index]:
                new = arguments[self._sent[index] :]
                self._sent[index] = len(arguments)
                deltas.append(DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=new)))
        return deltas


def _valid(call: _Call) -> bool:
    if not call.done or not call.name:
        return False
    try:
        json.loads(call.arguments)
    except ValueError:
        return False
    return True


class HermesToolParser(ToolParser):
    """`<tool_call>{"name": "f", "arguments": {...}}</tool_call>`, any number of times.

    Text before the first tag is content; a suffix that may be the start of a tag is held back
    until the next piece tells. Text between and after calls is dropped.
    """

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._buffer = ""
        self._scanner: ToolCallScanner | None = None  # the call being read
        self._in_call = False

    def _consume(self, text: str) -> str:
        self._buffer += text
        content: list[str] = []
        while self._buffer:
            if self._scanner is not None:
                used = self._scanner.feed(self._buffer)
                self._buffer = self._buffer[used:]
                if not self._scanner.done:
                    break
                self._scanner = None
            if self._in_call:  # after the object: skip to the closing tag
                end = self._buffer.find(self.END)
                if end < 0:
                    self._buffer = self._buffer[-(len(self.END) - 1) :]
                    break
                self._buffer = self._buffer[end + len(self.END) :]
                self._in_call = False
            before, self._buffer, found = split_at_tag(self._buffer, self.START)
            if not self.calls:
                content.append(before)
            if not found:
                break
            self._scanner = ToolCallScanner("arguments")
            self.calls.append(self._scanner)
            self._in_call = True
        return "".join(content)

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held if not self.calls else ""

    def _content_without_calls(self) -> str | None:
        # As in vLLM: no valid call, so the whole output is the reply, tags and all.
        return "".join(self._output)


def split_at_tag(text: str, tag: str) -> tuple[str, str, bool]:
    """`text` split at the first `tag`: the text before it, the text after it, True. Without
    the tag: the text, less a suffix that may be the tag's start, that suffix, False."""
    start = text.find(tag)
    if start >= 0:
        return text[:start], text[start + len(tag) :], True
    held = partial_tag_length(text, tag)
    return text[: len(text) - held], text[len(text) - held :], False


def partial_tag_length(text: str, tag: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class CallObjects:
    """Reads a run of `{"name": "f", <args key>: {...}}` objects as their text arrives,
    skipping what lies between them (brackets, commas, semicolons, spaces); each object is
    added to `calls` as it opens."""

    def __init__(self, calls: list[_Call], args_key: str | tuple[str, ...]) -> None:
        self._calls = calls
        self._args_key = args_key
        self._scanner: ToolCallScanner | None = None

    def feed(self, text: str) -> None:
        while text:
            if self._scanner is None:
                start = text.find("{")
                if start < 0:
                    return
                self._scanner = ToolCallScanner(self._args_key)
                self._calls.append(self._scanner)
                text = text[start:]
            used = self._scanner.feed(text)
            text = text[used:]
            if self._scanner.done:
                self._scanner = None


class RequiredToolParser(ToolParser):
    """`[{"name": "f", "parameters": {...}}, ...]`: every object of the array is a call."""

    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._objects = CallObjects(self.calls, "parameters")

    def _consume(self, text: str) -> str:
        self._objects.feed(text)
        return ""


class NamedToolParser(ToolParser):
    """The whole output is the arguments of the one named function."""

    def __init__(self, name: str) -> None:
        super().__init__(parallel=False)
        self._call = FixedCall(name)
        self.calls.append(self._call)

    def _consume(self, text: str) -> str:
        self._call.text.append(text)
        return ""

    def _flush(self) -> str:
        self._call.done = True
        return ""
