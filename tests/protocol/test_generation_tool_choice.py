from __future__ import annotations

from typing import Any

import jsonschema
import llguidance
import orjson
import pytest

from configs.settings import TOOL_CALL_PARSERS, Settings
from protocol.converter import structure
from protocol.generation.chat_template import template_tools
from protocol.generation.tool_choice import TOOL_CALL_PARSERS as PARSER_CLASSES
from protocol.generation.tool_choice import _required_schema, tool_plan
from protocol.http import HTTPError
from protocol.openai.chat_schemas import ChatCompletionRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"$ref": "#/$defs/city"}},
            "required": ["city"],
            "$defs": {"city": {"type": "string"}},
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
MESSAGES = [{"role": "user", "content": "Hi"}]

GRAMMAR_CHARS = Settings().max_grammar_chars


def request(**fields: Any) -> ChatCompletionRequest:
    return structure({"messages": MESSAGES, **fields}, ChatCompletionRequest)


def refused(fields: dict[str, Any], parser: str | None = "hermes") -> HTTPError:
    with pytest.raises(HTTPError) as info:
        tool_plan(request(**fields), parser, GRAMMAR_CHARS)
    assert info.value.status == 400
    return info.value


def test_every_parser_setting_has_a_parser() -> None:
    assert set(TOOL_CALL_PARSERS) == {*PARSER_CLASSES, "none"}


def test_tool_choice_defaults_follow_vllm() -> None:
    assert tool_plan(request(), "hermes", GRAMMAR_CHARS).mode == "none"
    assert tool_plan(request(tools=[WEATHER]), "hermes", GRAMMAR_CHARS).mode == "auto"
    plan = tool_plan(request(tools=[WEATHER], tool_choice="none"), None, GRAMMAR_CHARS)
    assert plan.mode == "none" and plan.parser() is None


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"tools": []}, "tools", "must not be an empty array"),
        ({"tool_choice": "auto"}, "tool_choice", "tools must be set"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            "tool_choice",
            "tools must be set",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "does not match any of the specified tools",
        ),
        ({"tools": [WEATHER], "tool_choice": {}}, "tool_choice", "named tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "'sometimes'"),
        ({"tools": [{**WEATHER, "type": "retrieval"}]}, "tools[0].type", "'retrieval'"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}
                ],
                "tool_choice": "required",
            },
            "tool_choice",
            "Invalid",
        ),
    ],
)
def test_bad_tools_and_tool_choice_are_400s(fields: dict, param: str, words: str) -> None:
    err = refused(fields)
    assert err.param == param and words in err.message


def test_auto_needs_a_parser_but_forced_choices_do_not() -> None:
    assert "tool_call_parser" in refused({"tools": [WEATHER]}, parser=None).message
    assert tool_plan(request(tools=[WEATHER], tool_choice="required"), None, GRAMMAR_CHARS).grammar


def test_required_schema_accepts_calls_to_the_given_tools_only() -> None:
    schema = _required_schema(
        [request(tools=[WEATHER]).tools[0], request(tools=[CLOCK]).tools[0]], True
    )
    good = [
        {"name": "get_weather", "parameters": {"city": "Oslo"}},
        {"name": "get_time", "parameters": {}},
    ]
    jsonschema.validate(good, schema)
    for bad in (
        [],
        [{"name": "get_weather", "parameters": {}}],  # a required argument missing
        [{"name": "launch", "parameters": {}}],
        [{"name": "get_time", "parameters": {}, "extra": 1}],
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    single = _required_schema(request(tools=[CLOCK]).tools, parallel=False)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([good[1], good[1]], single)


def test_forced_grammars_compile() -> None:
    for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        plan = tool_plan(request(tools=[WEATHER, CLOCK], tool_choice=choice), None, GRAMMAR_CHARS)
        assert plan.grammar and not llguidance.LLMatcher.validate_grammar(plan.grammar)
    named = tool_plan(
        request(
            tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
        ),
        None,
        GRAMMAR_CHARS,
    )
    assert named.mode == "named" and named.function == "get_weather" and not named.parallel


def test_template_sees_the_tools_as_sent_without_unset_fields() -> None:
    tools = template_tools(request(tools=[WEATHER, CLOCK]).tools)
    assert orjson.dumps(tools) == orjson.dumps([WEATHER, CLOCK])
