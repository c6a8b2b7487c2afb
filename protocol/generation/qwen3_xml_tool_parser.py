"""Qwen3-Coder's XML tool calls (`tool_call_parser = "qwen3_xml"`): content, then per call

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Oslo
    </parameter>
    </function>
    </tool_call>

Parameter values are text; each is typed by the tool's JSON schema (numbers, booleans, objects
and arrays parsed, strings kept), or without one parsed as JSON where it is JSON. A call goes
out whole once its closing tag arrives."""

from __future__ import annotations

import json
import re
from typing import Any

from protocol.generation.tool_parsers import FixedCall, ToolParser, split_at_tag
from protocol.openai.chat_schemas import ChatTool

START, END = "<tool_call>", "</tool_call>"
_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


class Qwen3XmlToolParser(ToolParser):
    def __init__(self, parallel: bool, tools: tuple[ChatTool, ...] = ()) -> None:
        super().__init__(parallel)
        # Each function's parameter schemas, by parameter name.
        self._schemas = {
            t.function.name: (t.function.parameters or {}).get("properties") or {} for t in tools
        }
        self._buffer = ""

    @classmethod
    def for_request(cls, parallel: bool, tools: tuple[ChatTool, ...]) -> ToolParser:
        return cls(parallel, tools)

    def _consume(self, text: str) -> str:
        self._buffer += text
        content: list[str] = []
        while True:
            before, rest, found = split_at_tag(self._buffer, START)
            if not self.calls:
                content.append(before)
            if not found:
                self._buffer = rest
                break
            block, _, after = rest.partition(END)
            if block == rest:
                self._buffer = START + rest  # the call is not complete yet
                break
            self.calls.append(self._call(block))
            self._buffer = after
        return "".join(content)

    def _call(self, block: str) -> FixedCall:
        match = _FUNCTION.search(block)
        if match is None:
            return FixedCall(None, [block], done=True)  # no function: rejected as invalid
        name, body = match.group(1).strip(), match.group(2)
        schemas = self._schemas.get(name, {})
        arguments = {
            key.strip(): _typed(value, schemas.get(key.strip()))
            for key, value in _PARAMETER.findall(body)
        }
        return FixedCall(name, [json.dumps(arguments)], done=True)

    def _flush(self) -> str:
        held, self._buffer = self._buffer, ""
        return held if not self.calls else ""

    def _content_without_calls(self) -> str | None:
        return "".join(self._output)


def _typed(value: str, schema: dict[str, Any] | None) -> Any:
    """A parameter's text as the value its schema describes."""
    kind = (schema or {}).get("type")
    if kind == "string":
        return value
    if kind == "boolean":
        return value.strip().lower() == "true"
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if kind == "integer" and isinstance(parsed, float) and parsed.is_integer():
        return int(parsed)
    return parsed
