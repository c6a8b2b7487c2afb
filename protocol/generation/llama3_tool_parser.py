"""Llama 3.1+'s JSON tool calls (`tool_call_parser = "llama3_json"`): the whole reply is
`{"name": "f", "parameters": {...}}` (or "arguments"), several separated by `;`, optionally
after `<|python_tag|>`. A reply that starts with anything else is plain content."""

from __future__ import annotations

from protocol.generation.tool_parsers import CallObjects, ToolParser

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser(ToolParser):
    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._buffer = ""
        self._calling: bool | None = None  # undecided until the reply's first characters
        self._objects = CallObjects(self.calls, ("parameters", "arguments"))

    def _consume(self, text: str) -> str:
        if self._calling is None:
            self._buffer += text
            head = self._buffer.lstrip()
            if not head or (PYTHON_TAG.startswith(head) and head != PYTHON_TAG):
                return ""  # may still become a call: wait
            head = head.removeprefix(PYTHON_TAG).lstrip()
            if not head:
                return ""
            self._calling = head.startswith("{")
            text, self._buffer = (head if self._calling else self._buffer), ""
        if not self._calling:
            return text
        self._objects.feed(text)  # between calls: `;` and spaces
        return ""

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held

    def _content_without_calls(self) -> str | None:
        return "".join(self._output)
