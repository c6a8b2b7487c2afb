"""POST /v1/chat/completions/batch: one choice per conversation, submitted together."""

from __future__ import annotations

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
BATCH = "/v1/chat/completions/batch"


def _conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def _post(engine: ScriptedEngine, body: dict) -> dict:
    response = await HANDLERS[BATCH](make_request(body, server=server_with(engine)))
    return orjson.loads(response.body)


async def test_each_conversation_is_one_choice_and_all_go_to_the_engine_at_once() -> None:
    engine = ScriptedEngine(max_model_len=512, reply=lambda i: f"answer{i}")
    body = {
        "messages": [_conversation("one"), _conversation("two two"), _conversation("3")],
        "max_tokens": 20,
        "request_id": "b1",
    }
    batch = await _post(engine, body)
    assert [c["index"] for c in batch["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in batch["choices"]] == ["answer0", "answer1", "answer2"]
    assert all(c["message"]["role"] == "assistant" for c in batch["choices"])
    assert batch["id"] == "chatcmpl-b1" and batch["object"] == "chat.completion"
    assert len(engine.calls) == 1  # one submission: the conversations share decode steps
    prompts = engine.calls[0][1]
    assert len(prompts) == 3
    # Each prompt is that conversation rendered alone, as /v1/chat/completions would.
    for (ids, _), conversation in zip(prompts, body["messages"], strict=True):
        single = ScriptedEngine(max_model_len=512)
        request = {"messages": conversation, "max_tokens": 20}
        await HANDLERS["/v1/chat/completions"](make_request(request, server=server_with(single)))
        assert single.calls[0][1][0][0] == ids
    usage = batch["usage"]
    assert usage["prompt_tokens"] == sum(len(ids) for ids, _ in prompts)
    assert usage["completion_tokens"] == 3 * len("answer0") + 3  # and each one's EOS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_sampling_fields_apply_to_every_conversation() -> None:
    engine = ScriptedEngine(max_model_len=512)
    body = {
        "messages": [_conversation("a"), _conversation("b")],
        "max_completion_tokens": 2,
        "temperature": 0.25,
        "logprobs": True,
        "top_logprobs": 1,
        "return_token_ids": True,
        "response_format": {"type": "json_object"},
    }
    batch = await _post(engine, body)
    params = [p for _, p in engine.calls[0][1]]
    assert [p.max_tokens for p in params] == [2, 2]
    assert [p.temperature for p in params] == [0.25, 0.25]
    assert all(p.grammar is not None for p in params)
    assert [p.logprobs for p in params] == [1, 1]
    for choice in batch["choices"]:
        assert choice["finish_reason"] == "length"
        assert len(choice["token_ids"]) == 2
        assert choice["logprobs"] is not None  # the fake engine scores no tokens: the list


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": []}, "messages"),
        ({"messages": [[]]}, "messages"),
        ({"messages": [{"role": "user", "content": "not a conversation"}]}, "messages[0]"),
    ],
)
async def test_what_a_batch_leaves_out_is_a_400_naming_the_field(extra: dict, param: str) -> None:
    engine = ScriptedEngine(max_model_len=512)
    body = {"messages": [_conversation("a")], "max_tokens": 2, **extra}
    with pytest.raises(HTTPError) as info:
        await HANDLERS[BATCH](make_request(body, server=server_with(engine)))
    assert info.value.status == 400
    assert info.value.param == param, info.value.message
    assert engine.calls == []


async def test_one_bad_conversation_refuses_the_whole_batch_before_anything_runs() -> None:
    engine = ScriptedEngine(max_model_len=32)
    body = {"messages": [_conversation("fine"), _conversation("x" * 100)], "max_tokens": 2}
    with pytest.raises(HTTPError) as info:
        await HANDLERS[BATCH](make_request(body, server=server_with(engine)))
    assert info.value.status == 400 and "maximum context length" in info.value.message
    assert engine.calls == []


async def test_the_conversations_count_against_the_per_request_sequence_cap() -> None:
    engine = ScriptedEngine(max_model_len=512)
    server = server_with(engine)
    cap = server.settings.sequences_per_request
    body = {"messages": [_conversation("a")] * (cap + 1), "max_tokens": 2}
    with pytest.raises(HTTPError) as info:
        await HANDLERS[BATCH](make_request(body, server=server))
    assert info.value.status == 400 and f"at most {cap}" in info.value.message
    assert engine.calls == []
