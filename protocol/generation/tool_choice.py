"""A chat request's `tools` and `tool_choice` → how its output is constrained and parsed.

- "none": tools reach the template, output is plain content.
- "auto" (the default when tools are given): free output, read by the model's tool-call parser
  (the `tool_call_parser` setting); nothing is constrained.
- "required": the output must be a JSON array of {"name", "parameters"} calls to the given
  tools, enforced token by token by a grammar, so even a small model produces valid calls.
- {"type": "function", "function": {"name": f}}: the output must be f's arguments object.
Forced choices replace any structured-output constraint of the request, as in vLLM.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.generation.llama3_tool_parser import Llama3JsonToolParser
from protocol.generation.mistral_tool_parser import MistralToolParser
from protocol.generation.pythonic_tool_parser import PythonicToolParser
from protocol.generation.qwen3_xml_tool_parser import Qwen3XmlToolParser
from protocol.generation.structured_outputs import json_schema_grammar
from protocol.generation.tool_parsers import (
    HermesToolParser,
    NamedToolParser,
    RequiredToolParser,
    ToolParser,
)
from protocol.http import HTTPError
from protocol.openai.chat_schemas import ChatCompletionRequest, ChatTool

# tool_call_parser setting (configs/settings.py) → the parser of "auto" output.
TOOL_CALL_PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesToolParser,
    "llama3_json": Llama3JsonToolParser,
    "mistral": MistralToolParser,
    "pythonic": PythonicToolParser,
    "qwen3_xml": Qwen3XmlToolParser,
}

# A tool without parameters is called with an empty object.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _arguments_schema(tool: ChatTool) -> dict[str, Any]:
    """The schema a forced call's arguments must match. JSON Schema allows keys it does not
    list unless told otherwise, and a small model under a grammar happily invents some (and
    rarely stops); no function takes arguments it does not declare, so unless the tool says
    otherwise only its declared properties are allowed."""
    schema = dict(tool.function.parameters or _NO_PARAMETERS)
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def _invalid(message: str, param: str = "tool_choice") -> HTTPError:
    return HTTPError(400, message, "BadRequestError", param)


@attrs.frozen
class ToolPlan:
    mode: str  # "none" | "auto" | "required" | "named"
    parser_name: str | None = None  # "auto": the tool_call_parser setting
    function: str | None = None  # "named": the function's name
    parallel: bool = True
    grammar: str | None = None  # "required" and "named": what the output must match
    tools: tuple[ChatTool, ...] = ()  # "auto": the request's, for formats that type values

    def parser(self) -> ToolParser | None:
        """A fresh parser for one choice's output (None: plain content)."""
        if self.mode == "auto" and self.parser_name is not None:
            return TOOL_CALL_PARSERS[self.parser_name].for_request(self.parallel, self.tools)
        if self.mode == "required":
            return RequiredToolParser(self.parallel)
        if self.mode == "named":
            return NamedToolParser(self.function or "")
        return None


def tool_plan(
    req: ChatCompletionRequest, parser_name: str | None, max_grammar_chars: int
) -> ToolPlan:
    """Validates tools and tool_choice (each mistake a 400) and plans the output; a forced
    choice's schema may have at most max_grammar_chars characters."""
    tools = req.tools
    if tools is not None:
        if not tools:
            raise _invalid("tools must not be an empty array", "tools")
        for i, tool in enumerate(tools):
            if tool.type != "function":
                raise _invalid(
                    f"Unsupported tool type {tool.type!r}: only 'function' tools are supported.",
                    f"tools[{i}].type",
                )
    choice = req.tool_choice
    if choice is None:
        choice = "auto" if tools else "none"
    elif tools is None and choice != "none":
        raise _invalid("When using tool_choice, tools must be set.")
    if isinstance(choice, dict):
        return _named_plan(choice, tools or [], max_grammar_chars)
    if choice == "none":
        return ToolPlan("none")
    if choice == "auto":
        if parser_name is None:
            raise _invalid(
                '"auto" tool choice requires a tool_call_parser to be set for this model '
                '(tool_call_parser = "hermes" in its settings).'
            )
        return ToolPlan(
            "auto",
            parser_name=parser_name,
            parallel=req.parallel_tool_calls,
            tools=tuple(tools or ()),
        )
    if choice == "required":
        assert tools is not None
        grammar = json_schema_grammar(
            _required_schema(tools, req.parallel_tool_calls), "tool_choice", max_grammar_chars
        )
        return ToolPlan("required", parallel=req.parallel_tool_calls, grammar=grammar)
    raise _invalid(
        "tool_choice must be 'none', 'auto', 'required' or "
        f'{{"type": "function", "function": {{"name": ...}}}}, got {choice!r}.'
    )


def _named_plan(choice: dict[str, Any], tools: list[ChatTool], max_grammar_chars: int) -> ToolPlan:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise _invalid(
            'A named tool_choice must look like {"type": "function", "function": {"name": ...}}.'
        )
    tool = next((t for t in tools if t.function.name == name), None)
    if tool is None:
        raise _invalid(
            "The tool specified in tool_choice does not match any of the specified tools"
        )
    param = f"tools[{tools.index(tool)}].function.parameters"
    grammar = json_schema_grammar(_arguments_schema(tool), param, max_grammar_chars)
    return ToolPlan("named", function=name, parallel=False, grammar=grammar)


def _required_schema(tools: list[ChatTool], parallel: bool) -> dict[str, Any]:
    """An array of one or more {"name": <a tool>, "parameters": <its arguments>} objects."""
    calls = []
    defs: dict[str, Any] = {}
    for tool in tools:
        parameters = _arguments_schema(tool)
        # References into a tool's own $defs must resolve from the schema's root.
        defs.update(parameters.pop("$defs", {}))
        calls.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": parameters,
                },
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": calls},
    }
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema
