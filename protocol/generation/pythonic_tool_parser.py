"""Python-call tool calls (`tool_call_parser = "pythonic"`, Llama 3.2 and 4's small models):
the whole reply is a Python list of calls with keyword arguments, `[get_weather(city="Oslo"),
f()]`. A reply that does not start with `[` is plain content. The list is read once it closes
(arguments are Python literals, converted to JSON), so each call goes out whole."""

from __future__ import annotations

import ast
import json

from protocol.generation.tool_parsers import FixedCall, ToolParser


class PythonicToolParser(ToolParser):
    def __init__(self, parallel: bool) -> None:
        super().__init__(parallel)
        self._buffer = ""
        self._calling: bool | None = None  # undecided until the reply's first character

    def _consume(self, text: str) -> str:
        if self._calling is False:
            return text
        self._buffer += text
        head = self._buffer.lstrip()
        if not head:
            return ""
        if self._calling is None:
            self._calling = head.startswith("[")
            if not self._calling:
                text, self._buffer = self._buffer, ""
                return text
        calls = _parse_calls(head)
        if calls is not None:
            self.calls.extend(calls)
            self._buffer = ""
            self._calling = False  # after the list: nothing more is read
        return ""

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held if not self.calls else ""

    def _content_without_calls(self) -> str | None:
        return "".join(self._output)


def _parse_calls(text: str) -> list[FixedCall] | None:
    """The calls of a complete `[f(a=1), ...]`, or None while it is not (yet) one."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.List) or not all(isinstance(c, ast.Call) for c in tree.elts):
        return None
    calls = []
    for node in tree.elts:
        assert isinstance(node, ast.Call)
        if not isinstance(node.func, ast.Name) or node.args:
            return None
        try:
            arguments = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            text_arguments = json.dumps(arguments)
        except (ValueError, TypeError, SyntaxError):
            return None
        calls.append(FixedCall(node.func.id, [text_arguments], done=True))
    return calls
