"""Mistral's tool calls (`tool_call_parser = "mistral"`): content, then `[TOOL_CALLS]` and
either a JSON array of `{"name": "f", "arguments": {...}}` objects (v0.3 tokenizers) or, in
newer ones, `f[ARGS]{...}` per call, each after its own `[TOOL_CALLS]`."""

from __future__ import annotations

from protocol.generation.tool_call_scanner import JsonNesting
from protocol.generation.tool_parsers import CallObjects, FixedCall, ToolParser, split_at_tag

TOOL_CALLS, ARGS = "[TOOL_CALLS]", "[ARGS]"


class MistralToolParser(ToolParser):
    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._buffer = ""
        self._after_tag = False  # past a [TOOL_CALLS]
        self._array = False  # reading the JSON array form
        self._objects = CallObjects(self.calls, "arguments")
        self._call: FixedCall | None = None  # an `f[ARGS]{...}` call's arguments being read
        self._json = JsonNesting()  # where those arguments' text stands

    def _consume(self, text: str) -> str:
        self._buffer += text
        content: list[str] = []
        while self._buffer:
            if not self._after_tag:
                before, self._buffer, self._after_tag = split_at_tag(self._buffer, TOOL_CALLS)
                if not self.calls:
                    content.append(before)
                if not self._after_tag:
                    break
                continue
            if self._call is None and not self._array:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break  # what follows the tag decides the form
                self._array = self._buffer.startswith("[")
            if self._array:
                self._objects.feed(self._buffer)
                self._buffer = ""
                break
            if self._call is None:
                end = self._buffer.find(ARGS)
                if end < 0:
                    break  # the name is not complete yet
                self._call = FixedCall(self._buffer[:end].strip())
                self.calls.append(self._call)
                self._buffer = self._buffer[end + len(ARGS) :]
            self._read_arguments()
            if self._call is not None:
                break  # the arguments go on in the next piece
            self._after_tag = False
        return "".join(content)

    def _read_arguments(self) -> None:
        """Moves the current call's arguments object out of the buffer, up to its end."""
        assert self._call is not None
        for i, char in enumerate(self._buffer):
            self._json.read(char)
            if self._json.depth == 0 and not char.isspace():
                self._call.text.append(self._buffer[: i + 1])
                self._call.done = True
                self._call, self._buffer = None, self._buffer[i + 1 :]
                return
        self._call.text.append(self._buffer)
        self._buffer = ""

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held if not self.calls and not self._after_tag else ""

    def _content_without_calls(self) -> str | None:
        return "".join(self._output)
