"""POST /generative_scoring: one single-step prompt per item, the labels' probabilities back."""

from __future__ import annotations

import math

import orjson
import pytest
from protocol_fakes import BOS, ScriptedEngine, fake_logprob, make_request, server_with

from protocol.generative_scoring.handlers import label_probabilities
from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
ROUTE = "/generative_scoring"


async def _score(body: dict, engine: ScriptedEngine | None = None) -> dict:
    engine = engine or ScriptedEngine(max_model_len=64)
    response = await HANDLERS[ROUTE](make_request(body, server=server_with(engine)))
    return orjson.loads(response.body)


async def test_each_item_is_one_greedy_single_token_prompt_after_the_query() -> None:
    engine = ScriptedEngine(max_model_len=64)
    body = {"query": "ab", "items": ["c", "de"], "label_token_ids": [10, 20], "request_id": "g"}
    scored = await _score(body, engine)
    ((_, prompts),) = engine.calls  # one submission for all items
    assert [ids for ids, _ in prompts] == [
        [BOS, ord("a"), ord("b"), ord("c")],  # items are tokenized without the BOS
        [BOS, ord("a"), ord("b"), ord("d"), ord("e")],
    ]
    for _, params in prompts:
        assert (params.max_tokens, params.temperature, params.logprobs) == (1, 0.0, 0)
        assert params.logprob_token_ids == (10, 20)
        assert not params.has_logits_processors and not params.has_penalties
    first, second = math.exp(fake_logprob(10)), math.exp(fake_logprob(20))
    assert scored["id"] == "generative-scoring-g" and scored["object"] == "list"
    assert scored["model"] == "test-model"
    assert [d["index"] for d in scored["data"]] == [0, 1]
    assert all(d["object"] == "score" for d in scored["data"])
    for item in scored["data"]:
        assert item["score"] == pytest.approx(first / (first + second))
    assert scored["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_without_softmax_the_score_is_the_models_own_probability() -> None:
    body = {"query": "a", "items": ["b"], "label_token_ids": [30, 5], "apply_softmax": False}
    scored = await _score(body)
    assert scored["data"][0]["score"] == pytest.approx(math.exp(fake_logprob(30)))


async def test_item_first_and_token_id_inputs() -> None:
    engine = ScriptedEngine(max_model_len=64)
    body = {"query": [7, 8], "items": [[9], [10, 11]], "label_token_ids": [3], "item_first": True}
    await _score(body, engine)
    assert [ids for ids, _ in engine.calls[0][1]] == [[9, 7, 8], [10, 11, 7, 8]]


def test_label_probabilities_are_the_models_or_renormalised_among_the_labels() -> None:
    logprobs = [math.log(0.2), math.log(0.05)]
    assert label_probabilities(logprobs, apply_softmax=False) == pytest.approx([0.2, 0.05])
    assert label_probabilities(logprobs, apply_softmax=True) == pytest.approx([0.8, 0.2])


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"label_token_ids": []}, "label_token_ids", "at least one token ID"),
        ({"label_token_ids": [256]}, "label_token_ids", "out of vocabulary range [0, 256)"),
        ({"label_token_ids": [-1]}, "label_token_ids", "label_token_id -1 is out of vocab"),
        ({"items": []}, "items", "at least one item"),
        ({"items": "a string"}, "items", "a list of strings"),
        ({"items": [1, 2]}, "items", "a list of strings"),
        ({"query": ["a", "b"]}, "query", "a string or a list of token ids"),
        ({"items": [[300]]}, "items", "out of vocabulary"),
        ({"query": "x" * 80}, "input_tokens", "maximum context length is 64"),
        ({"items": ["a"] * 65}, "items", "at most 64"),
        ({"model": "nope"}, "model", "does not exist"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    body: dict, param: str, message: str
) -> None:
    engine = ScriptedEngine(max_model_len=64)
    request = {"query": "q", "items": ["a"], "label_token_ids": [1], **body}
    with pytest.raises(HTTPError) as info:
        await HANDLERS[ROUTE](make_request(request, server=server_with(engine)))
    assert info.value.status in (400, 404)
    assert info.value.param == param and message in info.value.message
    assert engine.calls == []
