"""The tool-call formats beside hermes, on replies as those models write them: the whole reply
and the same reply streamed one character at a time give the same content and calls."""

from __future__ import annotations

import json

import pytest
from protocol_fakes import ScriptedEngine, make_request, read_events, server_with

from protocol.generation.llama3_tool_parser import Llama3JsonToolParser
from protocol.generation.mistral_tool_parser import MistralToolParser
from protocol.generation.pythonic_tool_parser import PythonicToolParser
from protocol.generation.qwen3_xml_tool_parser import Qwen3XmlToolParser
from protocol.generation.tool_parsers import ToolParser
from protocol.openai.chat import create_chat_completion
from protocol.openai.chat_schemas import ChatTool, FunctionDefinition

OSLO = ("get_weather", {"city": "Oslo"})
PARIS = ("get_time", {"zone": "Europe/Paris", "hours": 24, "dst": True})

CASES = [
    # Llama 3.1 8B Instruct
    (Llama3JsonToolParser, '{"name": "get_weather", "parameters": {"city": "Oslo"}}', None, [OSLO]),
    (
        Llama3JsonToolParser,
        '<|python_tag|>{"name": "get_weather", "arguments": {"city": "Oslo"}}; '
        '{"name": "get_time", "parameters": {"zone": "Europe/Paris", "hours": 24, "dst": true}}',
        None,
        [OSLO, PARIS],
    ),
    (
        Llama3JsonToolParser,
        "It is sunny in Oslo {probably}.",
        "It is sunny in Oslo {probably}.",
        [],
    ),
    # Mistral 7B Instruct v0.3 (JSON array), and the newer name[ARGS] form
    (
        MistralToolParser,
        'Let me check. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
        '{"name": "get_time", "arguments": {"zone": "Europe/Paris", "hours": 24, "dst": true}}]',
        "Let me check. ",
        [OSLO, PARIS],
    ),
    (
        MistralToolParser,
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}[TOOL_CALLS]get_time[ARGS]'
        '{"zone": "Europe/Paris", "hours": 24, "dst": true}',
        None,
        [OSLO, PARIS],
    ),
    (MistralToolParser, "No tools [needed] here.", "No tools [needed] here.", []),
    # Llama 3.2 3B Instruct (pythonic)
    (
        PythonicToolParser,
        "[get_weather(city='Oslo'), get_time(zone=\"Europe/Paris\", hours=24, dst=True)]",
        None,
        [OSLO, PARIS],
    ),
    (PythonicToolParser, "Sunny, 21 degrees.", "Sunny, 21 degrees.", []),
]


def _calls(tool_calls) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in tool_calls]


@pytest.mark.parametrize(("parser_class", "reply", "content", "calls"), CASES)
def test_whole_and_streamed_replies_give_the_same_content_and_calls(
    parser_class: type[ToolParser], reply: str, content: str | None, calls: list
) -> None:
    whole = parser_class(parallel=True)
    whole.feed(reply)
    whole.finish()
    whole_content, whole_calls = whole.result()
    assert (whole_content, _calls(whole_calls)) == (content, calls)

    streamed = parser_class(parallel=True)
    pieces = [streamed.feed(char) for char in reply] + [streamed.finish()]
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for piece in pieces:
        for delta in piece.tool_calls:
            if delta.function.name is not None:
                names[delta.index] = delta.function.name
            arguments[delta.index] = arguments.get(delta.index, "") + (
                delta.function.arguments or ""
            )
    streamed_calls = [(names[i], json.loads(arguments[i])) for i in sorted(names)]
    assert streamed_calls == calls
    assert "".join(p.content for p in pieces) == (content or "")


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    parser = MistralToolParser(parallel=False)
    parser.feed('[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]')
    parser.finish()
    assert [c.function.name for c in parser.result()[1]] == ["a"]


@pytest.mark.parametrize("parser_class", [Llama3JsonToolParser, PythonicToolParser])
def test_a_call_cut_short_is_content_not_a_call(parser_class: type[ToolParser]) -> None:
    reply = (
        '{"name": "get_weather", "parameters": {"ci'
        if parser_class is Llama3JsonToolParser
        else "[get_weather(city='Os"
    )
    parser = parser_class(parallel=True)
    parser.feed(reply)
    parser.finish()
    assert parser.result() == (reply, [])


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("parser_name", "reply"),
    [
        ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Oslo"}}'),
        ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]'),
        ("pythonic", "[get_weather(city='Oslo')]"),
        (
            "qwen3_xml",
            "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n"
            "</function>\n</tool_call>",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_the_server_reads_calls_with_the_configured_parser(parser_name, reply, stream):
    engine = ScriptedEngine(reply=lambda i: reply, max_model_len=2048, tool_call_parser=parser_name)
    body = {"messages": [{"role": "user", "content": "Oslo?"}], "tools": [WEATHER]}
    response = await create_chat_completion(
        make_request({**body, "stream": stream}, server=server_with(engine))
    )
    if stream:
        events = await read_events(response)
        choices = [e["choices"][0] for e in events[:-1] if e["choices"]]
        deltas = [t for c in choices for t in c["delta"].get("tool_calls") or []]
        name = deltas[0]["function"]["name"]
        arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
        finish = choices[-1]["finish_reason"]
    else:
        choice = json.loads(response.body)["choices"][0]
        (call,) = choice["message"]["tool_calls"]
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        finish = choice["finish_reason"]
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Oslo"}, "tool_calls")


QWEN3_CODER_REPLY = (
    "I'll check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n"
    "</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n<parameter=zone>\n"
    "Europe/Paris\n</parameter>\n<parameter=hours>\n24\n</parameter>\n<parameter=dst>\ntrue\n"
    "</parameter>\n</function>\n</tool_call>"
)


def test_qwen3_xml_calls_whole_and_streamed() -> None:
    # Without the tools' schemas, values that are JSON are read as JSON.
    test_whole_and_streamed_replies_give_the_same_content_and_calls(
        Qwen3XmlToolParser, QWEN3_CODER_REPLY, "I'll check.\n", [OSLO, PARIS]
    )


def test_qwen3_xml_values_follow_the_tools_schema() -> None:
    tool = ChatTool(
        type="function",
        function=FunctionDefinition(
            name="lookup",
            parameters={
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "count": {"type": "integer"},
                    "exact": {"type": "boolean"},
                    "filters": {"type": "object"},
                },
            },
        ),
    )
    reply = (
        "<tool_call>\n<function=lookup>\n<parameter=code>\n42\n</parameter>\n"
        "<parameter=count>\n3\n</parameter>\n<parameter=exact>\nFalse\n</parameter>\n"
        '<parameter=filters>\n{"a": [1, 2]}\n</parameter>\n</function>\n</tool_call>'
    )
    parser = Qwen3XmlToolParser.for_request(True, (tool,))
    parser.feed(reply)
    parser.finish()
    ((name, arguments),) = _calls(parser.result()[1])
    assert (name, arguments) == (
        "lookup",
        {"code": "42", "count": 3, "exact": False, "filters": {"a": [1, 2]}},
    )
