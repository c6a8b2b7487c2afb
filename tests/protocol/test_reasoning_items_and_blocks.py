"""A reasoning parser's split in the Responses API (a reasoning item before the message) and in
the Anthropic Messages API (a thinking block before the text), whole and streamed, and a
thought sent back in a later turn reaching the chat template. The scripted engine writes one
character per step, so `</think>` arrives split across pieces."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from protocol_fakes import (
    CharTokenizer,
    ScriptedEngine,
    make_request,
    read_typed_events,
    server_with,
)
from test_reasoning import QWEN3_TEMPLATE, WEATHER, ThinkTokenizer

from protocol.generation.reasoning_parsers import reasoning_token_count
from protocol.http import Response, StreamingResponse
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {(route.method, route.path): route.handler for route in build_routes()}
THOUGHT, ANSWER = "Two and two.", "It is 4."
REPLY = f"{THOUGHT}</think>{ANSWER}"
TOOL_REPLY = (
    'Need weather.</think>Checking.<tool_call>\n{"name": "get_weather", '
    '"arguments": {"city": "Oslo"}}\n</tool_call>'
)
# Prints each message's thinking, so a test can see what reached the template.
REASONING_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}"
    "[{{ m.get('reasoning_content') or '' }}]{% endfor %}<|im_start|>assistant\n"
)


def _engine(reply: str = REPLY, **kwargs: Any) -> ScriptedEngine:
    kwargs.setdefault("chat_template", QWEN3_TEMPLATE)
    kwargs.setdefault("reasoning_parser", "qwen3")
    return ScriptedEngine(reply=lambda i: reply, max_model_len=2048, **kwargs)


async def _post(engine: ScriptedEngine, path: str, body: dict, server: Any = None) -> Any:
    server = server or server_with(engine)
    response = await HANDLERS["POST", path](make_request(body, server=server))
    if isinstance(response, Response):
        assert response.status == 200, response.body
        return orjson.loads(response.body)
    assert isinstance(response, StreamingResponse)
    return await read_typed_events(response)


def _prompt_text(engine: ScriptedEngine) -> str:
    ((ids, _),) = engine.calls[-1][1]
    return engine.tokenizer.decode(ids)


# --- Responses ----------------------------------------------------------------------------------


async def test_a_response_holds_a_reasoning_item_then_the_message() -> None:
    response = await _post(_engine(), "/v1/responses", {"input": "2 + 2?"})
    reasoning, message = response["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": THOUGHT}]
    assert reasoning["summary"] == [] and reasoning["status"] == "completed"
    assert message["type"] == "message" and message["content"][0]["text"] == ANSWER
    # The characters of the thought and of `</think>` were the thinking's tokens.
    details = response["usage"]["output_tokens_details"]
    assert details == {"reasoning_tokens": len(THOUGHT) + len("</think>")}


async def test_a_streamed_response_streams_the_reasoning_item_first() -> None:
    events = await _post(_engine(), "/v1/responses", {"input": "2 + 2?", "stream": True})
    types = [e["type"] for e in events]
    thinking = len(THOUGHT)
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * thinking,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(ANSWER),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "reasoning"),
        (1, "message"),
    ]
    assert events[3]["part"] == {"type": "reasoning_text", "text": ""}
    deltas = [e for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(e["delta"] for e in deltas) == THOUGHT
    assert {(e["item_id"], e["output_index"]) for e in deltas} == {(added[0]["item"]["id"], 0)}
    final = events[-1]["response"]
    whole = await _post(_engine(), "/v1/responses", {"input": "2 + 2?"})
    assert [i["type"] for i in final["output"]] == [i["type"] for i in whole["output"]]
    assert final["output"][0]["content"] == whole["output"][0]["content"]
    assert final["output"][1]["content"] == whole["output"][1]["content"]
    assert final["usage"]["output_tokens_details"] == whole["usage"]["output_tokens_details"]


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_message_and_function_call_are_three_items(stream: bool) -> None:
    body = {"input": "Weather?", "stream": stream, "tools": [{**WEATHER["function"]}]}
    body["tools"][0]["type"] = "function"
    result = await _post(_engine(TOOL_REPLY), "/v1/responses", body)
    output = result[-1]["response"]["output"] if stream else result["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call"]
    assert output[0]["content"][0]["text"] == "Need weather."
    assert output[1]["content"][0]["text"] == "Checking."
    assert orjson.loads(output[2]["arguments"]) == {"city": "Oslo"}


async def test_thinking_off_makes_no_reasoning_item() -> None:
    body = {"input": "2 + 2?", "chat_template_kwargs": {"enable_thinking": False}}
    response = await _post(_engine(ANSWER), "/v1/responses", body)
    assert [item["type"] for item in response["output"]] == ["message"]
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}


async def test_a_continuation_and_reasoning_input_items_give_the_template_the_thought() -> None:
    engine = _engine(chat_template=REASONING_TEMPLATE)
    server = server_with(engine)
    first = await _post(engine, "/v1/responses", {"input": "2 + 2?"}, server)
    then = {"input": "Sure?", "previous_response_id": first["id"]}
    await _post(engine, "/v1/responses", then, server)
    assert f"assistant:{ANSWER}[{THOUGHT}]user:Sure?" in _prompt_text(engine)
    # The same turn sent back by the client, as items.
    items = [
        {"role": "user", "content": "2 + 2?"},
        first["output"][0],
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Sure?"},
    ]
    await _post(engine, "/v1/responses", {"input": items})
    assert f"assistant:{ANSWER}[{THOUGHT}]user:Sure?" in _prompt_text(engine)


def test_reasoning_tokens_end_at_the_closing_tag_whether_it_is_one_token_or_many() -> None:
    chars = CharTokenizer()
    ids = chars.encode("ab</think>cd", add_special_tokens=False)
    assert reasoning_token_count(ids, True, chars) == len("ab</think>")
    assert reasoning_token_count(ids[:5], True, chars) == 5  # never closed: all of it
    assert reasoning_token_count(ids, False, chars) == 0
    one = ThinkTokenizer()
    assert reasoning_token_count(one.encode("ab</think>cd", False), True, one) == 3


# --- Anthropic ----------------------------------------------------------------------------------


def _message(**extra: Any) -> dict:
    return {"max_tokens": 256, "messages": [{"role": "user", "content": "2 + 2?"}], **extra}


async def test_a_message_has_a_thinking_block_then_the_text() -> None:
    message = await _post(_engine(), "/v1/messages", _message())
    thinking, text = message["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == THOUGHT
    assert isinstance(thinking["signature"], str) and thinking["signature"]
    assert text == {"type": "text", "text": ANSWER}


async def test_a_streamed_message_streams_the_thinking_block_first() -> None:
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    body = _message(stream=True, tools=[tool])
    events = await _post(_engine(TOOL_REPLY), "/v1/messages", body)
    blocks = [(e["index"], e["content_block"]["type"]) for e in events if "content_block" in e]
    assert blocks == [(0, "thinking"), (1, "text"), (2, "tool_use")]
    deltas: dict[int, list[dict]] = {}
    for e in events:
        if e["type"] == "content_block_delta":
            deltas.setdefault(e["index"], []).append(e["delta"])
    assert "".join(d["thinking"] for d in deltas[0][:-1]) == "Need weather."
    assert deltas[0][-1]["type"] == "signature_delta" and deltas[0][-1]["signature"]
    assert {d["type"] for d in deltas[0][:-1]} == {"thinking_delta"}
    assert "".join(d["text"] for d in deltas[1]) == "Checking."
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    # Each block stops before the next starts.
    order = [(e["type"], e.get("index")) for e in events]
    assert order.index(("content_block_stop", 0)) < order.index(("content_block_start", 1))


async def test_thinking_disabled_turns_the_templates_thinking_off() -> None:
    engine = _engine(ANSWER)
    message = await _post(engine, "/v1/messages", _message(thinking={"type": "disabled"}))
    assert message["content"] == [{"type": "text", "text": ANSWER}]
    assert _prompt_text(engine).endswith("<think>\n\n</think>\n\n")


async def test_an_unknown_thinking_type_is_refused() -> None:
    engine = _engine()
    body = _message(thinking={"type": "sometimes"})
    request = make_request(body, server=server_with(engine))
    response = await HANDLERS["POST", "/v1/messages"](request)
    assert response.status == 400
    assert "thinking" in orjson.loads(response.body)["error"]["message"]
    assert engine.calls == []


async def test_thinking_blocks_sent_back_reach_the_template() -> None:
    engine = _engine(chat_template=REASONING_TEMPLATE)
    turn = [
        {"role": "user", "content": "2 + 2?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": THOUGHT, "signature": "abc"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": ANSWER},
            ],
        },
        {"role": "user", "content": "Sure?"},
    ]
    await _post(engine, "/v1/messages", _message(messages=turn))
    assert f"assistant:{ANSWER}[{THOUGHT}]user:Sure?" in _prompt_text(engine)
