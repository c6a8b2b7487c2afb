from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from protocol.converter import structure
from protocol.generation.sampling import (
    check_max_tokens_limit,
    check_stream_options,
    choice_params,
    resolve_max_tokens,
    sampling_params,
    usage_flags,
)
from protocol.http import HTTPError
from protocol.openai.completion_schemas import CompletionRequest


def request(**fields: object) -> CompletionRequest:
    return structure({"prompt": "x", **fields}, CompletionRequest)


def params(max_tokens: int = 16, **fields: object) -> SamplingParams:
    return sampling_params(request(**fields), max_tokens)


def error(fn: object, *args: object) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.status == 400 and info.value.err_type == "BadRequestError"
    return info.value


def test_unset_fields_take_vllm_defaults() -> None:
    p = params()
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (1.0, 1.0, 0, 0.0)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert p.stop == () and p.stop_token_ids == () and p.seed is None and p.max_tokens == 16


def test_fields_are_carried_to_sampling_params() -> None:
    p = params(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.2,
        stop="\n",
        stop_token_ids=[5, 6, 5],
        ignore_eos=True,
        skip_special_tokens=False,
    )
    assert p == SamplingParams(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.2,
        stop=("\n",),
        stop_token_ids=(5, 6),
        ignore_eos=True,
        skip_special_tokens=False,
    )


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"temperature": -0.1}, "temperature", "temperature must be non-negative, got -0.1."),
        ({"top_p": 0}, "top_p", "top_p must be in (0, 1], got 0.0."),
        ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1], got 1.5."),
        ({"top_k": -2}, "top_k", "top_k must be 0 (disable), or at least 1, got -2."),
        ({"min_p": 1.5}, "min_p", "min_p must be in [0, 1], got 1.5."),
        (
            {"presence_penalty": 2.5},
            "presence_penalty",
            "presence_penalty must be in [-2, 2], got 2.5.",
        ),
        (
            {"frequency_penalty": -3},
            "frequency_penalty",
            "frequency_penalty must be in [-2, 2], got -3.0.",
        ),
        (
            {"repetition_penalty": 0},
            "repetition_penalty",
            "repetition_penalty must be greater than zero, got 0.0.",
        ),
        ({"n": 0}, "n", "n must be at least 1, got 0."),
        ({"n": 2, "temperature": 0}, "n", "n must be 1 when using greedy sampling, got 2."),
        ({"seed": 2**63}, "seed", f"seed must be in [{-(2**63)}, {2**63 - 1}], got {2**63}."),
        ({"stop": ["a", ""]}, "stop", "stop cannot contain an empty string."),
        ({"stop": ""}, "stop", "stop cannot contain an empty string."),
    ],
)
def test_invalid_fields_give_vllm_messages(fields: dict, param: str, message: str) -> None:
    err = error(lambda: params(**fields))
    assert err.message == message
    assert err.param == param


def test_zero_max_tokens_is_rejected() -> None:
    err = error(lambda: params(max_tokens=0))
    assert err.message == "max_tokens must be at least 1, got 0." and err.param == "max_tokens"


def test_top_k_minus_one_means_off() -> None:
    assert params(top_k=-1).top_k == 0


def test_a_top_k_beyond_any_vocabulary_means_off() -> None:
    # Found by fuzzing: 2**63 reached the sampler's int64 tensor and failed the engine's step.
    assert params(top_k=2**63).top_k == 0 and params(top_k=2**31 - 1).top_k == 2**31 - 1


def test_seed_minus_one_means_unseeded() -> None:
    assert params(seed=-1).seed is None


def test_greedy_ignores_truncation_settings() -> None:
    p = params(temperature=0, top_p=0.5, top_k=3, min_p=0.2)
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (0.0, 1.0, 0, 0.0)
    assert p.is_greedy


def test_tiny_temperature_is_raised_to_avoid_overflow() -> None:
    assert params(temperature=1e-3).temperature == 1e-2


def test_each_choice_gets_its_own_seed() -> None:
    seeded = choice_params(params(seed=10), 3)
    assert [p.seed for p in seeded] == [10, 11, 12]
    assert [p.seed for p in choice_params(params(), 2)] == [None, None]


def test_stream_options_need_stream() -> None:
    err = error(check_stream_options, request(stream_options={"include_usage": True}))
    assert err.message == "Stream options can only be defined when stream=True."
    assert err.param == "stream_options"
    check_stream_options(request(stream=True, stream_options={"include_usage": True}))
    check_stream_options(request(stream_options=None))


def test_continuous_usage_only_counts_with_include_usage() -> None:
    def flags(options: object) -> tuple[bool, bool]:
        return usage_flags(request(stream=True, stream_options=options))

    assert flags(None) == (False, False)
    assert flags({"include_usage": True}) == (True, False)
    assert flags({"include_usage": True, "continuous_usage_stats": True}) == (True, True)
    assert flags({"continuous_usage_stats": True}) == (False, False)


def test_max_tokens_above_max_model_len_is_rejected() -> None:
    err = error(check_max_tokens_limit, 100, "max_completion_tokens", 64)
    assert err.message == (
        "max_completion_tokens=100 cannot be greater than max_model_len=64. "
        "Please request fewer output tokens."
    )
    assert err.param == "max_completion_tokens"
    check_max_tokens_limit(64, "max_tokens", 64)
    check_max_tokens_limit(None, "max_tokens", 64)


def test_context_overflow_gives_vllm_message() -> None:
    err = error(resolve_max_tokens, 16, 60, 64)
    assert err.param == "input_tokens"
    assert err.message == (
        "This model's maximum context length is 64 tokens. However, you requested 16 output "
        "tokens and your prompt contains 60 input tokens, for a total of 76 tokens. Please "
        "reduce the length of the input prompt or the number of requested output tokens."
    )


def test_requested_max_tokens_that_fit_are_kept() -> None:
    assert resolve_max_tokens(16, 48, 64) == 16


def test_unset_max_tokens_fills_the_context() -> None:
    assert resolve_max_tokens(None, 10, 64) == 54


def test_unset_max_tokens_still_needs_room_for_one_token() -> None:
    assert "requested 1 output tokens" in error(resolve_max_tokens, None, 64, 64).message
    assert "requested 0 output tokens" in error(resolve_max_tokens, None, 70, 64).message
