"""Llama 3.1+'s JSON tool calls (`tool_call_parser = "llama3_json"`): the whole reply is
`{"name": "f", "parameters": {...}}` (or "arguments"), several separated by `;`, optionally
after `<|python_tag|>`. A reply that starts with anything else is plain content."""

from __future__ import annotations

from protocol.generation.tool_call_scanner import ToolCallScanner
from protocol.generation.tool_parsers import ToolParser

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser(ToolParser):
    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._buffer = ""
        self._calling: bool | None = None  # undecided until the reply's first characters
        self._scanner: ToolCallScanner | None = None

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
        while text:
            if self._scanner is None:
                start = text.find("{")  # between calls: `;` and spaces
                if start < 0:
                    break
                self._scanner = ToolCallScanner(("parameters", "arguments"))
                self.calls.append(self._scanner)
                text = text[start:]
            used = self._scanner.feed(text)
            text = text[used:]
            if self._scanner.done:
                self._scanner = None
        return ""

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held

    def _content_without_calls(self) -> str | None:
        return "".join(self._output)
