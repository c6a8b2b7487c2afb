from __future__ import annotations

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, read_events, server_with

from protocol.http import HTTPError, Response, StreamingResponse
from protocol.openai.chat import create_chat_completion

pytestmark = pytest.mark.anyio

USER_HI = [{"role": "user", "content": "Hi"}]


def make_engine(**kwargs: object) -> ScriptedEngine:
    # The character tokenizer makes ChatML's default system prompt ~100 tokens.
    kwargs.setdefault("max_model_len", 512)
    return ScriptedEngine(**kwargs)  # type: ignore[arg-type]


async def chat(engine: ScriptedEngine, body: dict) -> Response | StreamingResponse:
    request = make_request(body, server=server_with(engine), request_id="abc")
    return await create_chat_completion(request)


async def chat_error(engine: ScriptedEngine, body: dict) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await chat(engine, body)
    return info.value


async def test_non_streaming_response_has_vllm_shape() -> None:
    engine = make_engine(stop_reason=2)
    response = await chat(engine, {"messages": USER_HI, "max_completion_tokens": 10})
    assert isinstance(response, Response)
    body = orjson.loads(response.body)
    assert isinstance(body.pop("created"), int)
    ((prompt_ids, params),) = engine.calls[0][1]
    assert body == {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ok0",
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": 2,
                "token_ids": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "total_tokens": len(prompt_ids) + 4,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }
    # The chat template's text, tokenized without special tokens (chat's default).
    assert engine.tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert prompt_ids[0] == ord("<")
    assert params.max_tokens == 10


async def test_max_completion_tokens_wins_and_default_fills_the_context() -> None:
    engine = make_engine(max_model_len=512)
    await chat(engine, {"messages": USER_HI, "max_tokens": 3, "max_completion_tokens": 5})
    await chat(engine, {"messages": USER_HI})
    ((ids, first),) = engine.calls[0][1]
    ((_, second),) = engine.calls[1][1]
    assert first.max_tokens == 5 and second.max_tokens == 512 - len(ids)


async def test_streaming_chunk_rules_with_n_choices() -> None:
    engine = make_engine(reply=lambda i: f"r{i}")
    body = {
        "messages": USER_HI,
        "n": 2,
        "stream": True,
        "max_tokens": 8,
        "stream_options": {"include_usage": True},
    }
    response = await chat(engine, body)
    assert isinstance(response, StreamingResponse)
    events = await read_events(response)
    assert events[-1] == "[DONE]"
    usage_chunk, chunks = events[-2], events[:-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 6
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-abc" for c in chunks)
    assert all("usage" not in c for c in chunks)
    choices = [c["choices"][0] for c in chunks]
    assert all(len(c["choices"]) == 1 for c in chunks)
    # Role chunks first, one per choice.
    assert [(c["index"], c["delta"]) for c in choices[:2]] == [
        (0, {"role": "assistant", "content": ""}),
        (1, {"role": "assistant", "content": ""}),
    ]
    text = {0: "", 1: ""}
    finishes = {0: 0, 1: 0}
    for choice in choices[2:]:
        assert "role" not in choice["delta"]
        text[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"] is None:
            assert choice["delta"]["content"], "no empty content chunks"
        else:
            finishes[choice["index"]] += 1
    assert text == {0: "r0", 1: "r1"} and finishes == {0: 1, 1: 1}
    # The two choices interleave.
    assert [c["index"] for c in choices[2:6]] == [0, 1, 0, 1]
    # A finish after EOS has no text left: its delta is empty.
    assert choices[-1]["delta"] == {} and choices[-1]["finish_reason"] == "stop"


async def test_length_finish_carries_the_last_text() -> None:
    body = {"messages": USER_HI, "stream": True, "max_tokens": 2}
    events = await read_events(await chat(make_engine(), body))
    last = events[-2]["choices"][0]
    assert last["delta"] == {"content": "k"} and last["finish_reason"] == "length"


async def test_continuous_usage_counts_each_choice_from_zero() -> None:
    body = {
        "messages": USER_HI,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = await read_events(await chat(make_engine(), body))
    assert [e["usage"]["completion_tokens"] for e in events[:-2]] == [0, 1, 2, 3, 4]


async def test_without_generation_prompt_the_reply_continues_the_last_role() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": False}
    message = orjson.loads((await chat(make_engine(), body)).body)["choices"][0]["message"]
    assert message["role"] == "user"


async def test_engine_failure_mid_stream_sends_error_event_then_done() -> None:
    events = await read_events(
        await chat(make_engine(fail_after=1), {"messages": USER_HI, "stream": True})
    )
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"content": "o"}
    assert events[2]["error"]["code"] == 500
    assert events[3] == "[DONE]"


async def test_request_chat_template_and_kwargs_are_used() -> None:
    engine = make_engine(chat_template=None)
    body = {
        "messages": USER_HI,
        "chat_template": "{{ greeting }}{{ messages[0].content }}",
        "chat_template_kwargs": {"greeting": "Yo "},
    }
    await chat(engine, body)
    assert engine.tokenizer.decode(engine.calls[0][1][0][0]) == "Yo Hi"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"messages": [{"role": "user", "content": "x" * 80}], "stream": True},
            "input_tokens",
            "maximum context length",
        ),
        (
            {"messages": USER_HI, "max_completion_tokens": 100},
            "max_completion_tokens",
            "cannot be greater than max_model_len",
        ),
        ({"messages": USER_HI, "top_logprobs": 2}, "top_logprobs", "`logprobs` must be set"),
        (
            {"messages": USER_HI, "logprobs": True, "top_logprobs": 21},
            "logprobs",
            "greater than max allowed: 20",
        ),
        (
            {"messages": USER_HI, "response_format": {"type": "json_schema"}},
            "response_format",
            "needs json_schema.schema",
        ),
        (
            {"messages": USER_HI, "stream_options": {"include_usage": True}},
            "stream_options",
            "stream=True",
        ),
        ({"messages": USER_HI, "chat_template": "{{ raise_exception('no') }}"}, None, "no"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
            "only text parts",
        ),
        ({"messages": [], "chat_template": "{{ '' }}"}, "messages", "cannot be empty"),
        (
            {
                "messages": [{"role": "user", "content": "é" * 3}],
                "chat_template": "{{ messages[0].content }}",
            },
            "messages",
            "out of vocabulary",
        ),
    ],
)
async def test_invalid_requests_fail_before_any_stream_starts(
    body: dict, param: str | None, words: str
) -> None:
    engine = make_engine(max_model_len=64, vocab_size=200)
    err = await chat_error(engine, body)
    assert (err.status, err.param) == (400, param) and words in err.message
    assert engine.calls == []


async def test_no_template_anywhere_is_a_400() -> None:
    err = await chat_error(make_engine(chat_template=None), {"messages": USER_HI})
    assert err.status == 400 and "chat template" in err.message
