"""The Responses API over the chat path, with a scripted engine: output items, the store,
continuations, tools, text formats and the stream's events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, read_typed_events, server_with

from protocol.http import HTTPError, Response
from protocol.responses.store import ResponseStore, StoredResponse
from protocol.routes import build_routes
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio
HANDLERS = {(route.method, route.path): route.handler for route in build_routes()}
HERMES_TEMPLATE = (Path(__file__).parents[1] / "templates" / "hermes_tools.jinja").read_text()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _server(reply: str = "Hello there", **kwargs: object) -> tuple[ScriptedEngine, ServerState]:
    engine = ScriptedEngine(reply=lambda i: reply, max_model_len=2048, **kwargs)  # type: ignore[arg-type]
    return engine, server_with(engine)


async def _create(server: ServerState, body: dict) -> dict:
    response = await HANDLERS["POST", "/v1/responses"](make_request(body, server=server))
    assert isinstance(response, Response)
    return orjson.loads(response.body)


async def _call(server: ServerState, method: str, response_id: str) -> dict:
    request = make_request(None, server=server, method=method)
    request.path_params["response_id"] = response_id
    response = await HANDLERS[method, "/v1/responses/{response_id}"](request)
    return orjson.loads(response.body)


def _prompt_text(engine: ScriptedEngine, call: int = -1) -> str:
    ((ids, _),) = engine.calls[call][1]
    return engine.tokenizer.decode(ids)


async def _chat_prompt(messages: list[dict]) -> str:
    engine, server = _server()
    await HANDLERS["POST", "/v1/chat/completions"](
        make_request({"messages": messages}, server=server)
    )
    return _prompt_text(engine)


async def test_a_string_input_is_one_user_message_and_the_reply_one_output_message() -> None:
    engine, server = _server()
    response = await _create(server, {"input": "Hi", "instructions": "Be brief."})
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert response["status"] == "completed" and response["model"] == "test-model"
    (item,) = response["output"]
    assert (
        item["type"] == "message" and item["role"] == "assistant" and item["id"].startswith("msg_")
    )
    assert item["content"] == [
        {"type": "output_text", "text": "Hello there", "annotations": [], "logprobs": []}
    ]
    usage = response["usage"]
    assert usage["output_tokens"] == len("Hello there") + 1  # and the EOS
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    expected = await _chat_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert _prompt_text(engine) == expected


async def test_max_output_tokens_cut_short_is_incomplete() -> None:
    _, server = _server()
    response = await _create(server, {"input": "Hi", "max_output_tokens": 3})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "Hel"


async def test_stored_responses_are_retrieved_deleted_and_continued() -> None:
    engine, server = _server(reply="Paris.")
    first = await _create(server, {"input": "Capital of France?", "instructions": "Be brief."})
    assert await _call(server, "GET", first["id"]) == first
    second = await _create(server, {"input": "And of Italy?", "previous_response_id": first["id"]})
    assert second["previous_response_id"] == first["id"]
    # The stored conversation comes first; the first request's instructions do not.
    expected = await _chat_prompt(
        [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ]
    )
    assert _prompt_text(engine) == expected
    assert await _call(server, "DELETE", first["id"]) == {
        "id": first["id"],
        "object": "response",
        "deleted": True,
    }
    with pytest.raises(HTTPError) as info:
        await _call(server, "GET", first["id"])
    assert info.value.status == 404 and info.value.param == "response_id"
    assert info.value.message == f"Response with id '{first['id']}' not found."
    with pytest.raises(HTTPError) as info:
        await _create(server, {"input": "x", "previous_response_id": first["id"]})
    assert info.value.status == 404 and info.value.param == "previous_response_id"


async def test_store_false_keeps_nothing() -> None:
    _, server = _server()
    response = await _create(server, {"input": "Hi", "store": False})
    assert response["store"] is False and len(server.responses) == 0


def test_the_store_drops_the_oldest_past_its_capacity() -> None:
    store = ResponseStore(capacity=2)
    entries = [StoredResponse(response=_Fake(f"resp_{i}"), conversation=[]) for i in range(3)]
    for entry in entries:
        store.put(entry)  # type: ignore[arg-type]
    assert store.get("resp_0") is None
    assert store.get("resp_1") is entries[1] and store.get("resp_2") is entries[2]


class _Fake:
    def __init__(self, id: str) -> None:
        self.id = id


async def test_function_calls_are_output_items_and_their_outputs_continue_the_turn() -> None:
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    engine, server = _server(reply=reply, chat_template=HERMES_TEMPLATE)
    response = await _create(server, {"input": "Weather in Oslo?", "tools": [WEATHER]})
    (call,) = response["output"]
    assert call["type"] == "function_call" and call["id"].startswith("fc_")
    assert call["name"] == "get_weather" and call["arguments"] == '{"city": "Oslo"}'
    assert response["tools"] == [{**WEATHER, "description": None, "strict": None}]
    follow_up = [
        {
            "type": "function_call",
            "call_id": call["call_id"],
            "name": "get_weather",
            "arguments": call["arguments"],
        },
        {"type": "function_call_output", "call_id": call["call_id"], "output": "12 C, rain"},
    ]
    await _create(
        server,
        {"input": follow_up, "previous_response_id": response["id"], "tools": [WEATHER]},
    )
    prompt = _prompt_text(engine)
    assert "12 C, rain" in prompt and prompt.count("get_weather") >= 2


async def test_a_forced_function_and_text_formats_constrain_the_output() -> None:
    engine, server = _server(reply='{"city": "Oslo"}', chat_template=HERMES_TEMPLATE)
    forced = {"type": "function", "name": "get_weather"}
    response = await _create(server, {"input": "x", "tools": [WEATHER], "tool_choice": forced})
    assert response["output"][0]["type"] == "function_call"
    assert engine.calls[-1][1][0][1].grammar is not None
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    text = {"format": {"type": "json_schema", "name": "a", "schema": schema}}
    response = await _create(server, {"input": "x", "text": text})
    assert response["text"] == {"format": {**text["format"], "description": None, "strict": None}}
    assert engine.calls[-1][1][0][1].grammar is not None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": [{"type": "function_call_output", "call_id": 3}]}, "input[0]"),
        ({"input": []}, "input"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"input": "x", "max_output_tokens": 4096}, "max_output_tokens"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(body: dict, param: str) -> None:
    engine, server = _server()
    with pytest.raises(HTTPError) as info:
        await _create(server, body)
    assert info.value.status == 400 and info.value.param == param, info.value.message
    assert engine.calls == []


async def test_the_stream_sends_the_event_sequence_the_sdk_expects() -> None:
    _, server = _server(reply="Hi!")
    response = await HANDLERS["POST", "/v1/responses"](
        make_request({"input": "Hello", "stream": True}, server=server)
    )
    events = await read_typed_events(response)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if "delta" in e) == "Hi!"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hi!"
    assert events[0]["response"]["status"] == "in_progress"
    assert server.responses.get(final["id"]) is not None


async def test_a_streamed_function_call_ends_with_its_item() -> None:
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    _, server = _server(reply=reply, chat_template=HERMES_TEMPLATE)
    response = await HANDLERS["POST", "/v1/responses"](
        make_request({"input": "Weather?", "tools": [WEATHER], "stream": True}, server=server)
    )
    events = await read_typed_events(response)
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-2]["item"]["arguments"] == '{"city": "Oslo"}'
