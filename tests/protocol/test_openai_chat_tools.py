"""Tool calls and the chat extras through the chat handler, with a scripted engine that writes
its reply one character per step (so every stream is fed one token at a time)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, read_events, server_with

from protocol.http import HTTPError, Response
from protocol.openai.chat import create_chat_completion

pytestmark = pytest.mark.anyio

HERMES_TEMPLATE = (Path(__file__).parents[1] / "templates" / "hermes_tools.jinja").read_text()
USER = [{"role": "user", "content": "Weather in Oslo?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HERMES_REPLY = (
    'Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
)


def engine_replying(reply: str, **kwargs: object) -> ScriptedEngine:
    kwargs.setdefault("chat_template", HERMES_TEMPLATE)
    return ScriptedEngine(reply=lambda i: reply, max_model_len=2048, **kwargs)  # type: ignore[arg-type]


async def chat(engine: ScriptedEngine, body: dict) -> dict | list:
    response = await create_chat_completion(
        make_request(body, server=server_with(engine), request_id="abc")
    )
    if isinstance(response, Response):
        return orjson.loads(response.body)
    return await read_events(response)


async def test_auto_tool_call_non_streaming() -> None:
    engine = engine_replying(HERMES_REPLY)
    body = await chat(engine, {"messages": USER, "tools": [WEATHER]})
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("chatcmpl-tool-") and len(call["id"]) == len("chatcmpl-tool-") + 16
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    # The template saw the tools; hermes tags must survive detokenization.
    ((prompt_ids, params),) = engine.calls[0][1]
    assert '"name": "get_weather"' in engine.tokenizer.decode(prompt_ids)
    assert params.skip_special_tokens is False and params.grammar is None


async def test_auto_tool_call_streams_deltas_as_openai_clients_expect() -> None:
    events = await chat(
        engine_replying(HERMES_REPLY), {"messages": USER, "tools": [WEATHER], "stream": True}
    )
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    content = "".join(d.get("content", "") for d in deltas[1:])
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert content == "Checking." and "<" not in content
    first, rest = calls[0], calls[1:]
    assert set(first) == {"index", "id", "type", "function"} and first["index"] == 0
    assert first["function"]["name"] == "get_weather"
    assert all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in rest
    )
    arguments = first["function"]["arguments"] + "".join(c["function"]["arguments"] for c in rest)
    assert json.loads(arguments) == {"city": "Oslo"}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_auto_without_a_call_is_plain_content() -> None:
    body = await chat(engine_replying("It is sunny."), {"messages": USER, "tools": [WEATHER]})
    choice = body["choices"][0]
    assert choice["message"]["content"] == "It is sunny." and choice["message"]["tool_calls"] == []
    assert choice["finish_reason"] == "stop"


async def test_tool_choice_none_leaves_tags_as_content() -> None:
    body = await chat(
        engine_replying(HERMES_REPLY), {"messages": USER, "tools": [WEATHER], "tool_choice": "none"}
    )
    assert body["choices"][0]["message"]["content"] == HERMES_REPLY


async def test_call_cut_by_max_tokens_finishes_with_length() -> None:
    engine = engine_replying(HERMES_REPLY)
    body = {"messages": USER, "tools": [WEATHER], "max_tokens": 50}
    choice = (await chat(engine, body))["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["tool_calls"] == []
    events = await chat(engine, {**body, "stream": True})
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_required_tool_choice() -> None:
    engine = engine_replying('[{"name":"get_weather","parameters":{"city":"Oslo"}}]')
    body = {"messages": USER, "tools": [WEATHER], "tool_choice": "required"}
    choice = (await chat(engine, body))["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert engine.calls[0][1][0][1].grammar  # enforced, not hoped for
    events = await chat(engine, {**body, "stream": True})
    calls = [c for e in events[:-1] for c in e["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Oslo"}'
    assert all("content" not in e["choices"][0]["delta"] for e in events[1:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_named_tool_choice_overrides_response_format() -> None:
    engine = engine_replying('{"city":"Oslo"}')
    body = {
        "messages": USER,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
    }
    choice = (await chat(engine, body))["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == ""
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Oslo"}'
    grammar = engine.calls[0][1][0][1].grammar
    assert grammar is not None and '"city"' in grammar
    events = await chat(engine, {**body, "stream": True})
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_assistant_tool_calls_and_tool_results_round_trip_through_the_template() -> None:
    engine = engine_replying("It is 21 degrees.")
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": '{"celsius": 21}'},
    ]
    await chat(engine, {"messages": messages, "tools": [WEATHER]})
    prompt = engine.tokenizer.decode(engine.calls[0][1][0][0])
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        in prompt
    )
    assert '<tool_response>\n{"celsius": 21}\n</tool_response>' in prompt


async def test_echo_puts_the_last_message_first() -> None:
    engine = engine_replying(" and blue.")
    messages = [*USER, {"role": "assistant", "content": "Red"}]
    body = {
        "messages": messages,
        "echo": True,
        "add_generation_prompt": False,
        "continue_final_message": True,
        "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
    }
    message = (await chat(engine, body))["choices"][0]["message"]
    assert message == {**message, "role": "assistant", "content": "Red and blue."}
    # continue_final_message: the prompt ends inside the assistant's turn.
    assert engine.tokenizer.decode(engine.calls[0][1][0][0]).endswith("[assistant] Red")
    events = await chat(engine, {**body, "stream": True})
    assert events[1]["choices"][0]["delta"] == {"content": "Red"}
    # Without a message of the reply's role last, nothing is echoed.
    plain = await chat(engine, {"messages": USER, "echo": True})
    assert plain["choices"][0]["message"]["content"] == " and blue."


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"messages": USER, "continue_final_message": True},
            "continue_final_message",
            "Cannot set both continue_final_message and add_generation_prompt to True.",
        ),
        (
            {
                "messages": USER,
                "continue_final_message": True,
                "add_generation_prompt": False,
                "chat_template": "{{ 'nothing of the message' }}",
            },
            "continue_final_message",
            "cannot be continued",
        ),
        ({"messages": USER, "tool_choice": "required"}, "tool_choice", "tools must be set"),
    ],
)
async def test_chat_extras_refused_before_generation(body: dict, param: str, words: str) -> None:
    engine = engine_replying("x")
    with pytest.raises(HTTPError) as info:
        await chat(engine, body)
    assert (info.value.status, info.value.param) == (400, param) and words in info.value.message
    assert engine.calls == []


async def test_documents_custom_roles_and_content_format_reach_the_template() -> None:
    engine = engine_replying("x", chat_template=None)
    template = (
        "{% for d in documents %}<{{ d.text }}>{% endfor %}"
        "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}"
    )
    messages = [
        {
            "role": "critic",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    ]
    body = {"messages": messages, "chat_template": template, "documents": [{"text": "doc"}]}
    await chat(engine, body)
    assert engine.tokenizer.decode(engine.calls[0][1][0][0]) == "<doc>critic:a\nb;"
    # The model's setting can force OpenAI-style parts on a template that does not loop.
    engine.chat_template_content_format = "openai"
    await chat(engine, body)
    assert "critic:[{'type': 'text', 'text': 'a'}" in engine.tokenizer.decode(
        engine.calls[1][1][0][0]
    )
