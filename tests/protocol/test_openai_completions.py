from __future__ import annotations

import attrs
import orjson
import pytest
from protocol_fakes import BOS, ScriptedEngine, make_request, read_events, server_with

from protocol.http import HTTPError, Response, StreamingResponse
from protocol.openai.completions import create_completion

pytestmark = pytest.mark.anyio


async def complete(engine: ScriptedEngine, body: dict) -> Response | StreamingResponse:
    request = make_request(body, server=server_with(engine), request_id="abc")
    return await create_completion(request)


async def complete_error(engine: ScriptedEngine, body: dict) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await complete(engine, body)
    return info.value


async def test_non_streaming_response_has_vllm_shape() -> None:
    engine = ScriptedEngine(stop_reason=None)
    response = await complete(engine, {"model": "test-model", "prompt": "Hi"})
    assert isinstance(response, Response) and response.status == 200
    body = orjson.loads(response.body)
    created = body.pop("created")
    assert isinstance(created, int)
    assert body == {
        "id": "cmpl-abc",
        "object": "text_completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "text": "ok0",
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        # "Hi" is BOS + 2 characters; "ok0" then EOS is 4 generated tokens.
        "usage": {
            "prompt_tokens": 3,
            "total_tokens": 7,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "kv_transfer_params": None,
    }
    request_id, prompts = engine.calls[0]
    assert request_id == "cmpl-abc"
    assert prompts[0][0] == [BOS, ord("H"), ord("i")]
    assert prompts[0][1].max_tokens == 16


async def test_list_of_prompts_with_n_orders_choices_prompt_major() -> None:
    engine = ScriptedEngine(reply=lambda i: f"r{i}")
    body = {"prompt": [[5, 6], [7, 8, 9]], "n": 2, "seed": 100, "max_tokens": 8}
    response = await complete(engine, body)
    body_out = orjson.loads(response.body)
    assert [(c["index"], c["text"]) for c in body_out["choices"]] == [
        (0, "r0"),
        (1, "r1"),
        (2, "r2"),
        (3, "r3"),
    ]
    _, prompts = engine.calls[0]
    assert [ids for ids, _ in prompts] == [[5, 6], [5, 6], [7, 8, 9], [7, 8, 9]]
    # Each prompt's samples are seeded seed, seed+1: reproducible per prompt, distinct per sample.
    assert [p.seed for _, p in prompts] == [100, 101, 100, 101]
    # Prompt tokens count once per prompt; completion tokens once per choice.
    assert body_out["usage"]["prompt_tokens"] == 5
    assert body_out["usage"]["completion_tokens"] == 12


async def test_max_tokens_caps_generation_with_length() -> None:
    response = await complete(
        ScriptedEngine(reply=lambda i: "abcdef"), {"prompt": "x", "max_tokens": 2}
    )
    (choice,) = orjson.loads(response.body)["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("ab", "length")


async def test_echo_prepends_the_prompt_text() -> None:
    response = await complete(ScriptedEngine(), {"prompt": ["Hi", "Yo"], "echo": True})
    texts = [c["text"] for c in orjson.loads(response.body)["choices"]]
    assert texts == ["Hiok0", "Yook1"]
    # Token-id prompts echo their decoded text.
    response = await complete(ScriptedEngine(), {"prompt": [72, 111], "echo": True})
    assert orjson.loads(response.body)["choices"][0]["text"] == "Hook0"


async def test_streamed_echo_comes_with_each_choices_first_chunk() -> None:
    body = {"prompt": "Hi", "n": 2, "echo": True, "stream": True}
    events = await read_events(await complete(ScriptedEngine(), body))
    assert [e["choices"][0]["text"] for e in events[:2]] == ["Hio", "Hio"]


async def test_streaming_sends_one_choice_per_chunk_and_one_finish_per_choice() -> None:
    engine = ScriptedEngine(reply=lambda i: f"r{i}")
    body = {"prompt": ["a", "b"], "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    response = await complete(engine, body)
    assert isinstance(response, StreamingResponse)
    events = await read_events(response)
    assert events[-1] == "[DONE]"
    usage_chunk, chunks = events[-2], events[:-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 16,
        "completion_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    for chunk in chunks:
        assert chunk["id"] == "cmpl-abc" and chunk["object"] == "text_completion"
        assert "usage" not in chunk
        (choice,) = chunk["choices"]
        assert set(choice) == {"index", "text", "logprobs", "finish_reason", "stop_reason"}
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["finish_reason"] is not None:
            finishes.setdefault(choice["index"], []).append(choice["finish_reason"])
        else:
            assert choice["text"], "only finishing chunks may be empty"
    assert texts == {0: "r0", 1: "r1", 2: "r2", 3: "r3"}
    assert finishes == {0: ["stop"], 1: ["stop"], 2: ["stop"], 3: ["stop"]}
    # The choices interleave rather than arriving one after another.
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 2, 3]


async def test_continuous_usage_stats_add_running_usage_to_every_chunk() -> None:
    body = {
        "prompt": [3, 4],
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = await read_events(await complete(ScriptedEngine(), body))
    assert [e["usage"]["completion_tokens"] for e in events[:-2]] == [1, 2, 3, 4]
    assert all(e["usage"]["prompt_tokens"] == 2 for e in events[:-1])


async def test_engine_failure_mid_stream_sends_error_event_then_done() -> None:
    engine = ScriptedEngine(fail_after=2)
    events = await read_events(await complete(engine, {"prompt": "x", "stream": True}))
    assert [e["choices"][0]["text"] for e in events[:2]] == ["o", "k"]
    assert events[2] == {
        "error": {
            "message": "engine exploded",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert events[3] == "[DONE]"


async def test_abandoned_stream_closes_the_engine_iterator() -> None:
    engine = ScriptedEngine(reply=lambda i: "long reply")
    response = await complete(engine, {"prompt": "x", "stream": True})
    assert isinstance(response, StreamingResponse)
    await read_events(response, limit=2)
    await response.chunks.aclose()  # type: ignore[attr-defined]
    assert engine.closed


async def test_nothing_reaches_the_engine_until_the_stream_is_read() -> None:
    engine = ScriptedEngine()
    await complete(engine, {"prompt": "x", "stream": True})
    assert engine.calls == []


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "x" * 60, "stream": True}, "input_tokens", "maximum context length is 64"),
        ({"prompt": "x", "max_tokens": 65}, "max_tokens", "cannot be greater than"),
        ({"prompt": [300]}, "prompt", "out of vocabulary"),
        ({"prompt": ""}, "prompt", "Either prompt or prompt_embeds"),
        ({"prompt": []}, "prompt", "Either prompt or prompt_embeds"),
        ({"prompt": [[]]}, "prompt", "Either prompt or prompt_embeds"),
        ({}, "prompt", "Either prompt or prompt_embeds"),
        ({"prompt": "x", "suffix": "y"}, "suffix", "suffix is not currently supported"),
        ({"prompt": "x", "logprobs": 21}, "logprobs", "greater than max allowed: 20"),
        ({"prompt": "x", "logit_bias": {"999": 1}}, "logit_bias", "Vocabulary size: 256"),
        ({"prompt": "x", "allowed_token_ids": []}, "allowed_token_ids", "not allowed to be empty"),
        ({"prompt": "x", "min_tokens": 99}, "min_tokens", "max_tokens=16"),
        ({"prompt": "x", "guided_regex": "[a-"}, "guided_regex", "Invalid regex"),
        (
            {"prompt": "x", "guided_json": {"type": "nope"}},
            "guided_json",
            "Invalid json for structured output",
        ),
        (
            {"prompt": "x", "guided_regex": "a", "guided_choice": ["a"]},
            "guided_choice",
            "Only one kind of structured output",
        ),
        ({"prompt": "x", "response_format": {"type": "xml"}}, "response_format", "must be"),
        (
            {"prompt": "x", "stream_options": {"include_usage": True}},
            "stream_options",
            "only be defined when stream=True",
        ),
        ({"prompt": "x", "n": 3, "temperature": 0, "stream": True}, "n", "greedy"),
    ],
)
async def test_invalid_requests_fail_before_any_stream_starts(
    body: dict, param: str, words: str
) -> None:
    engine = ScriptedEngine()
    err = await complete_error(engine, body)
    assert (err.status, err.param) == (400, param) and words in err.message
    assert engine.calls == []


async def test_null_max_tokens_fills_the_context() -> None:
    engine = ScriptedEngine()
    await complete(engine, {"prompt": [5] * 10, "max_tokens": None})
    assert engine.calls[0][1][0][1].max_tokens == 54


async def test_unknown_model_is_a_404() -> None:
    err = await complete_error(ScriptedEngine(), {"model": "nope", "prompt": "x"})
    assert (err.status, err.err_type) == (404, "NotFoundError")


async def test_prompts_times_n_past_the_per_request_limit_is_refused_before_any_work() -> None:
    """2,000 prompts x n = 8192 once grew the server to 23 GB: now a 400, and nothing reaches
    the engine (the default limit is max_num_seqs, 64)."""
    engine = ScriptedEngine()
    err = await complete_error(engine, {"prompt": [[5, 6]] * 2000, "n": 8192})
    assert (err.status, err.param) == (400, "n")
    assert "16384" in err.message  # n itself is past vLLM's limit
    err = await complete_error(engine, {"prompt": [[5, 6]] * 2000, "n": 2})
    assert (err.status, err.param) == (400, "n")
    assert "4000 sequences (2000 prompt(s) x n=2)" in err.message
    assert "at most 64 per request (max_sequences_per_request)" in err.message
    err = await complete_error(engine, {"prompt": "Hi", "n": 65})
    assert "65 sequences" in err.message
    assert engine.calls == []


async def test_the_per_request_limit_is_a_setting() -> None:
    engine = ScriptedEngine()
    server = server_with(engine)
    server.settings = attrs.evolve(server.settings, max_sequences_per_request=2)
    body = {"prompt": ["a", "b", "c"], "max_tokens": 2}
    with pytest.raises(HTTPError) as info:
        await create_completion(make_request(body, server=server))
    assert "3 sequences" in info.value.message and "at most 2" in info.value.message
    response = await create_completion(make_request({**body, "prompt": ["a", "b"]}, server=server))
    assert response.status == 200
