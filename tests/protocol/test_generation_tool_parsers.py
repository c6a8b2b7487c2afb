"""Tool-call parsers fed the way a stream feeds them: one character at a time, or split at
every possible point. Whatever the split, the streamed deltas must add up to the same calls
as the whole-output parse."""

from __future__ import annotations

import json
import random

import pytest

from protocol.generation.tool_call_scanner import ToolCallScanner
from protocol.generation.tool_parsers import (
    HermesToolParser,
    NamedToolParser,
    RequiredToolParser,
    ToolParser,
)

WEATHER_ARGS = '{"city": "Pa\\"ris }", "days": [1, {"unit": "C"}], "alerts": true}'
HERMES_TWO_CALLS = (
    "Let me look that up.\n<tool_call>\n"
    f'{{"name": "get_weather", "arguments": {WEATHER_ARGS}}}\n</tool_call>\n'
    '<tool_call>\n{"arguments": {}, "name": "get_time"}\n</tool_call>'
)


def stream(parser: ToolParser, pieces: list[str]) -> tuple[str, dict[int, dict[str, str]]]:
    """Feeds `pieces`; returns the streamed content and each call's id, name and arguments
    joined from its deltas, checking the delta rules on the way."""
    content: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    deltas = [parser.feed(piece) for piece in pieces] + [parser.finish()]
    for delta in deltas:
        content.append(delta.content)
        for call in delta.tool_calls:
            if call.index not in calls:
                # The first delta of a call announces it: id, type and name.
                assert call.id and call.id.startswith("chatcmpl-tool-")
                assert call.type == "function" and call.function.name
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            else:
                assert call.id is None and call.type is None and call.function.name is None
            calls[call.index]["arguments"] += call.function.arguments or ""
    return "".join(content), calls


def whole(parser: ToolParser, text: str) -> tuple[str | None, list[tuple[str, str]]]:
    parser.feed(text)
    parser.finish()
    content, calls = parser.result()
    return content, [(c.function.name, c.function.arguments) for c in calls]


def splits(text: str) -> list[list[str]]:
    """Every way to cut `text` in two, one character at a time, and a few random cuttings."""
    rng = random.Random(0)
    ways = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    ways.append(list(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 6))
        ways.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return ways


def test_hermes_whole_output() -> None:
    content, calls = whole(HermesToolParser(parallel=True), HERMES_TWO_CALLS)
    assert content == "Let me look that up.\n"
    assert calls == [("get_weather", WEATHER_ARGS), ("get_time", "{}")]
    assert json.loads(calls[0][1])["city"] == 'Pa"ris }'


@pytest.mark.parametrize("pieces", splits(HERMES_TWO_CALLS))
def test_hermes_streams_the_same_calls_however_the_text_is_split(pieces: list[str]) -> None:
    parser = HermesToolParser(parallel=True)
    content, calls = stream(parser, pieces)
    assert content == "Let me look that up.\n"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", "{}"),
    ]
    # The non-streaming result of the same parser reuses the streamed ids.
    _, result = parser.result()
    assert [c.id for c in result] == [c["id"] for c in calls.values()]


def test_hermes_holds_back_only_what_may_be_a_tag() -> None:
    parser = HermesToolParser(parallel=True)
    assert parser.feed("I will <to").content == "I will "
    assert parser.feed("day's rescue").content == "<today's rescue"
    assert parser.feed(" <tool_").content == " "
    assert parser.finish().content == "<tool_"  # the end: nothing more can complete the tag
    assert not parser.called
    assert parser.result() == ("I will <today's rescue <tool_", [])


def test_hermes_without_valid_calls_returns_the_whole_output_as_content() -> None:
    broken = 'Sure. <tool_call>{"name": "f", "arguments": {"x": 1</tool_call>'
    assert whole(HermesToolParser(parallel=True), broken) == (broken, [])
    cut_short = '<tool_call>{"name": "f", "arguments": {"x": '
    assert whole(HermesToolParser(parallel=True), cut_short) == (cut_short, [])
    assert whole(HermesToolParser(parallel=True), "plain answer") == ("plain answer", [])


def test_hermes_parameterless_call_streams_an_empty_object() -> None:
    content, calls = stream(HermesToolParser(parallel=True), list('<tool_call>{"name": "now"}'))
    assert content == "" and calls[0]["arguments"] == "{}"


def test_hermes_without_parallel_calls_keeps_the_first() -> None:
    parser = HermesToolParser(parallel=False)
    _, calls = stream(parser, list(HERMES_TWO_CALLS))
    assert list(calls) == [0]
    assert [c.function.name for c in parser.result()[1]] == ["get_weather"]


REQUIRED_OUTPUT = (
    '[{"name":"get_weather","parameters":{"city":"Oslo","days":[1,2]}},'
    '{"parameters":{},"name":"get_time"}]'
)


@pytest.mark.parametrize("pieces", splits(REQUIRED_OUTPUT))
def test_required_array_streams_each_call(pieces: list[str]) -> None:
    parser = RequiredToolParser(parallel=True)
    content, calls = stream(parser, pieces)
    assert content == ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        ("get_weather", '{"city":"Oslo","days":[1,2]}'),
        ("get_time", "{}"),
    ]
    assert parser.result()[1][1].function.name == "get_time"


def test_required_cut_short_reports_no_calls() -> None:
    assert whole(RequiredToolParser(parallel=True), '[{"name":"f","parameters":{"a":') == (
        None,
        [],
    )


@pytest.mark.parametrize("pieces", splits('{"query":"cats","limit":3}'))
def test_named_call_streams_the_output_as_arguments(pieces: list[str]) -> None:
    parser = NamedToolParser("search")
    content, calls = stream(parser, pieces)
    assert content == ""
    assert calls[0]["name"] == "search"
    assert calls[0]["arguments"] == '{"query":"cats","limit":3}'
    assert [(c.function.name, c.function.arguments) for c in parser.result()[1]] == [
        ("search", '{"query":"cats","limit":3}')
    ]


def test_scanner_reports_the_name_when_its_string_closes_and_stops_at_the_brace() -> None:
    scanner = ToolCallScanner("arguments")
    assert scanner.feed('  {"name": "get_') == 16 and scanner.name is None
    piece = 'weather", "arguments": {"a": [1'
    assert scanner.feed(piece) == len(piece)
    assert scanner.name == "get_weather" and scanner.arguments == '{"a": [1'
    assert scanner.feed("]}} trailing") == 3
    assert scanner.done and scanner.arguments == '{"a": [1]}'


def test_scanner_reads_escaped_names_and_scalar_values() -> None:
    scanner = ToolCallScanner("arguments")
    scanner.feed('{"id": 7, "name": "a\\u00e9\\"b", "arguments": "text", "x": null}')
    assert scanner.done and scanner.name == 'aé"b' and scanner.arguments == '"text"'


def test_hermes_call_without_a_name_is_never_announced_nor_are_later_ones() -> None:
    text = '<tool_call>{"tool": "f"}</tool_call><tool_call>{"name": "g"}</tool_call>'
    parser = HermesToolParser(parallel=True)
    content, calls = stream(parser, list(text))
    assert (content, calls) == ("", {}) and not parser.called
    assert parser.result() == (text, [])
