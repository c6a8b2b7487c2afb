"""The Anthropic Messages API over the chat path, with a scripted engine: content blocks, stop
reasons, usage, tools, count_tokens, the stream's events and Anthropic's error body."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, read_typed_events, server_with

from protocol.http import Response, StreamingResponse
from protocol.routes import build_routes
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
HERMES_TEMPLATE = (Path(__file__).parents[1] / "templates" / "hermes_tools.jinja").read_text()
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL_REPLY = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def _server(reply: str = "Hello", **kwargs: object) -> tuple[ScriptedEngine, ServerState]:
    kwargs.setdefault("chat_template", HERMES_TEMPLATE)
    engine = ScriptedEngine(reply=lambda i: reply, max_model_len=2048, **kwargs)  # type: ignore[arg-type]
    return engine, server_with(engine)


async def _post(server: ServerState, body: dict, path: str = "/v1/messages") -> Response:
    response = await HANDLERS[path](make_request(body, server=server))
    assert isinstance(response, Response)
    return response


async def _message(server: ServerState, body: dict) -> dict:
    response = await _post(server, {"max_tokens": 256, **body})
    assert response.status == 200, response.body
    return orjson.loads(response.body)


def _prompt(engine: ScriptedEngine) -> list[int]:
    ((ids, _),) = engine.calls[-1][1]
    return ids


async def _chat_prompt(messages: list[dict], **extra: object) -> list[int]:
    engine, server = _server()
    body = {"messages": messages, **extra}
    await HANDLERS["/v1/chat/completions"](make_request(body, server=server))
    return _prompt(engine)


async def test_a_message_has_text_content_end_turn_and_usage() -> None:
    engine, server = _server()
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}
    message = await _message(server, body)
    assert message["id"].startswith("msg_") and message["type"] == "message"
    assert message["role"] == "assistant" and message["model"] == "test-model"
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    prompt = _prompt(engine)
    assert message["usage"] == {
        "input_tokens": len(prompt),
        "output_tokens": len("Hello") + 1,
        "cache_read_input_tokens": 0,
    }
    expected = await _chat_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert prompt == expected
    # System as text blocks, content as text blocks: the same prompt.
    blocks = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    await _message(server, blocks)
    assert _prompt(engine) == expected


async def test_stop_reasons_for_max_tokens_and_a_stop_sequence() -> None:
    _, server = _server()
    user = [{"role": "user", "content": "Hi"}]
    cut = await _message(server, {"messages": user, "max_tokens": 2})
    assert cut["stop_reason"] == "max_tokens" and cut["content"][0]["text"] == "He"
    engine, server = _server(stop_reason="END")
    stopped = await _message(server, {"messages": user, "stop_sequences": ["END"]})
    assert stopped["stop_reason"] == "stop_sequence" and stopped["stop_sequence"] == "END"
    assert engine.calls[-1][1][0][1].stop == ("END",)


async def test_sampling_fields_reach_the_engine() -> None:
    engine, server = _server()
    body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5, "top_k": 7}
    await _message(server, {**body, "top_p": 0.9, "max_tokens": 9})
    params = engine.calls[-1][1][0][1]
    assert (params.temperature, params.top_k, params.top_p, params.max_tokens) == (0.5, 7, 0.9, 9)


async def test_tool_use_blocks_out_and_tool_results_back_in() -> None:
    engine, server = _server(reply=TOOL_REPLY)
    user = {"role": "user", "content": "Weather in Oslo?"}
    message = await _message(server, {"messages": [user], "tools": [WEATHER]})
    (block,) = message["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather" and block["input"] == {"city": "Oslo"}
    assert message["stop_reason"] == "tool_use"
    turn = [
        user,
        {"role": "assistant", "content": [block]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": block["id"], "content": "12 C, rain"},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]
    await _message(server, {"messages": turn, "tools": [WEATHER]})
    call = {
        "id": block["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    tool = {"type": "function", "function": {**WEATHER, "parameters": WEATHER["input_schema"]}}
    del tool["function"]["input_schema"]
    expected = await _chat_prompt(
        [
            user,
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": block["id"], "content": "12 C, rain"},
            {"role": "user", "content": "Thanks."},
        ],
        tools=[tool],
    )
    assert _prompt(engine) == expected


@pytest.mark.parametrize(
    ("choice", "grammar"),
    [
        ({"type": "any"}, True),
        ({"type": "tool", "name": "get_weather"}, True),
        ({"type": "auto"}, False),
        ({"type": "none"}, False),
    ],
)
async def test_tool_choice_maps_onto_chats(choice: dict, grammar: bool) -> None:
    engine, server = _server(reply='{"city": "Oslo"}')
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}
    await _message(server, {**body, "tool_choice": choice})
    assert (engine.calls[-1][1][0][1].grammar is not None) is grammar


async def test_count_tokens_counts_the_prompt_a_message_would_send() -> None:
    engine, server = _server()
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}
    await _message(server, {**body, "tools": [WEATHER]})
    response = await _post(server, {**body, "tools": [WEATHER]}, "/v1/messages/count_tokens")
    assert orjson.loads(response.body) == {"input_tokens": len(_prompt(engine))}


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
        ({"max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
        (
            {"max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
            400,
            "invalid_request_error",
        ),
        (
            {"max_tokens": 5, "model": "nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "not_found_error",
        ),
        (
            {"max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "sometimes"},
            },
            400,
            "invalid_request_error",
        ),
    ],
)
async def test_errors_have_anthropics_shape(body: dict, status: int, error_type: str) -> None:
    engine, server = _server()
    response = await _post(server, body)
    assert response.status == status
    error = orjson.loads(response.body)
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert error["error"]["message"] and set(error["error"]) == {"type", "message"}
    assert engine.calls == []


async def _events(response: StreamingResponse) -> list[tuple[str, dict]]:
    return [(event["type"], event) for event in await read_typed_events(response)]


async def test_the_stream_sends_anthropics_events() -> None:
    _, server = _server(reply="Hi!")
    body = {"max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    response = await HANDLERS["/v1/messages"](make_request(body, server=server))
    events = await _events(response)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == "Hi!"
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 4}


async def test_a_streamed_tool_call_is_a_tool_use_block_with_its_json() -> None:
    _, server = _server(reply=TOOL_REPLY)
    body = {
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [WEATHER],
    }
    response = await HANDLERS["/v1/messages"](make_request(body, server=server))
    events = await _events(response)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert orjson.loads(events[2][1]["delta"]["partial_json"]) == {"city": "Oslo"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
