"""The model's generation_config.json defaults (engine.generation_defaults): they fill the
sampling fields a request leaves unset, for completions and chat alike, as vLLM's do."""

from __future__ import annotations

import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from engine.sampling_params import SamplingParams
from protocol.converter import structure
from protocol.generation.sampling import resolve_max_tokens, sampling_params
from protocol.openai.chat import create_chat_completion
from protocol.openai.completion_schemas import CompletionRequest
from protocol.openai.completions import create_completion

DEFAULTS = {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}


def params(defaults: dict, **fields: object) -> SamplingParams:
    return sampling_params(structure({"prompt": "x", **fields}, CompletionRequest), 16, defaults)


def sampling(p: SamplingParams) -> tuple:
    return (p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty)


def test_unset_fields_take_the_models_defaults() -> None:
    assert sampling(params(DEFAULTS)) == (0.6, 0.9, 20, 0.05, 1.1)


def test_fields_the_request_sets_win() -> None:
    p = params(DEFAULTS, temperature=1.2, top_k=5, repetition_penalty=1.0)
    assert sampling(p) == (1.2, 0.9, 5, 0.05, 1.0)


def test_without_defaults_vllms_neutral_values_apply() -> None:
    assert sampling(params({})) == (1.0, 1.0, 0, 0.0, 1.0)
    assert sampling(params({"top_p": 0.5})) == (1.0, 0.5, 0, 0.0, 1.0)


def test_greedy_request_still_ignores_the_models_filters() -> None:
    assert sampling(params(DEFAULTS, temperature=0)) == (0.0, 1.0, 0, 0.0, 1.1)


def test_max_new_tokens_is_a_default_not_a_ceiling() -> None:
    assert resolve_max_tokens(None, 10, 64, default=20) == 20
    assert resolve_max_tokens(None, 50, 64, default=20) == 14  # what fits
    assert resolve_max_tokens(40, 10, 64, default=20) == 40  # a request may ask for more
    assert resolve_max_tokens(None, 10, 64) == 54


def engine_params(engine: ScriptedEngine) -> SamplingParams:
    (_, prompts) = engine.calls[-1]
    return prompts[0][1]


@pytest.mark.anyio
async def test_chat_applies_the_engines_defaults() -> None:
    engine = ScriptedEngine(max_model_len=256, generation_defaults={**DEFAULTS, "max_tokens": 7})
    messages = [{"role": "user", "content": "Hi"}]
    server = server_with(engine)
    await create_chat_completion(make_request({"messages": messages}, server=server))
    p = engine_params(engine)
    assert sampling(p) == (0.6, 0.9, 20, 0.05, 1.1) and p.max_tokens == 7

    body = {"messages": messages, "temperature": 0.2, "max_tokens": 30}
    await create_chat_completion(make_request(body, server=server))
    p = engine_params(engine)
    assert p.temperature == 0.2 and p.top_k == 20 and p.max_tokens == 30


@pytest.mark.anyio
async def test_completions_apply_the_engines_defaults() -> None:
    engine = ScriptedEngine(generation_defaults={**DEFAULTS, "max_tokens": 5})
    server = server_with(engine)
    await create_completion(make_request({"prompt": "Hi"}, server=server))
    p = engine_params(engine)
    # Completions default max_tokens to 16 in the schema itself, as vLLM's do.
    assert sampling(p) == (0.6, 0.9, 20, 0.05, 1.1) and p.max_tokens == 16
    await create_completion(make_request({"prompt": "Hi", "max_tokens": None}, server=server))
    assert engine_params(engine).max_tokens == 5
