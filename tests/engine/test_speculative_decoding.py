"""Speculative decoding (prompt-lookup drafts) on the embedded model: the output is what it is
without drafts, token for token when greedy, and the drafts do get accepted."""

from __future__ import annotations

import json

import pytest

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams

# A text the model is asked to repeat: its continuation is found in the prompt.
SOURCE = (
    "The quick brown fox jumps over the lazy dog. The lazy dog sleeps in the warm sun all "
    "afternoon, and the quick brown fox runs back into the forest before the farmer comes home."
)
PROMPTS = [
    f"<|im_start|>user\nRepeat this text exactly: {SOURCE}<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nCount from one to twenty in words.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
]
SPEC = json.dumps({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3})


def make_engine(model_dir, speculative_config: str | None, **settings: object) -> LLMEngine:
    base = dict(dtype="float32", max_model_len=512, kv_cache_memory_gb=0.05, block_size=16)
    base.update(settings)
    return LLMEngine(Settings(speculative_config=speculative_config, **base), model_dir)


def generate(engine: LLMEngine, params: list[SamplingParams]) -> dict[str, dict]:
    """Runs every prompt at once; per request its tokens, text, finish, per-token logprobs,
    how many outputs brought them and how often it was preempted."""
    results: dict[str, dict] = {}
    for i, (prompt, p) in enumerate(zip(PROMPTS, params, strict=True)):
        ids = engine.tokenizer(prompt)["input_ids"]
        engine.add_request(str(i), ids, p)
        results[str(i)] = {"tokens": [], "text": "", "logprobs": [], "outputs": 0}
    while engine.has_work:
        for seq, output in engine.step():
            assert not isinstance(output, Exception), output
            r = results[seq.request_id]
            r["tokens"] += output.new_token_ids
            r["text"] += output.new_text
            r["logprobs"] += output.logprobs or []
            r["outputs"] += 1
            r["preemptions"] = seq.num_preemptions
            assert output.num_output_tokens == len(r["tokens"])
            if output.finished:
                r["finish"] = (output.finish_reason, output.stop_reason)
    engine.scheduler.block_manager.check_invariants()
    assert engine.scheduler.block_manager.num_free_blocks == engine.runner.num_blocks
    return results


def assert_same_output(got: dict[str, dict], expected: dict[str, dict]) -> None:
    """Tokens, text, finish and logprobs (every kept token's row is the same computation as
    without drafts); only how many outputs brought them may differ."""
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        for field in ("tokens", "text", "finish", "logprobs"):
            assert got[key][field] == want[field], (key, field)


@pytest.fixture(scope="module")
def engines(smollm2_dir):
    return make_engine(smollm2_dir, None), make_engine(smollm2_dir, SPEC)


def test_greedy_output_is_identical_with_drafts_and_drafts_are_accepted(engines) -> None:
    plain, spec = engines
    params = [SamplingParams(max_tokens=60, temperature=0, logprobs=2)] * len(PROMPTS)
    expected = generate(plain, params)
    got = generate(spec, params)
    assert_same_output(got, expected)
    # Repeating the prompt's text: most tokens come several per step.
    repeat = got["0"]
    assert repeat["outputs"] < 0.6 * len(repeat["tokens"]), repeat["outputs"]


def test_stops_inside_accepted_drafts_cut_the_output_there(engines) -> None:
    plain, spec = engines
    params = [
        SamplingParams(max_tokens=23, temperature=0, logprobs=1),  # length, mid-drafts
        SamplingParams(max_tokens=60, temperature=0, stop=("ten",), logprobs=0),  # a string
        SamplingParams(max_tokens=7, temperature=0, ignore_eos=True),
    ]
    expected = generate(plain, params)
    got = generate(spec, params)
    assert_same_output(got, expected)
    assert len(got["0"]["logprobs"]) == 23 and len(got["1"]["logprobs"]) == len(got["1"]["tokens"])
    assert len(got["0"]["tokens"]) == 23 and got["0"]["finish"] == ("length", None)
    assert got["1"]["finish"] == ("stop", "ten") and "ten" not in got["1"]["text"]


def test_seeded_sampling_with_drafts_is_reproducible(engines) -> None:
    _, spec = engines
    params = [SamplingParams(max_tokens=40, temperature=0.8, seed=s) for s in (1, 2, 3)]
    first = generate(spec, params)
    assert generate(spec, params) == first
    assert len({tuple(r["tokens"]) for r in first.values()}) == 3


def test_drafts_that_do_not_fit_the_budget_or_memory_are_dropped(smollm2_dir) -> None:
    # 8 tokens a step for 3 sequences: the third decode gets budget for few or no drafts; a
    # small cache makes sequences preempt each other. Output stays the greedy one.
    plain = make_engine(smollm2_dir, None)
    tight = make_engine(
        smollm2_dir,
        SPEC,
        max_model_len=128,
        max_num_batched_tokens=8,
        kv_cache_memory_gb=0.006,
        block_size=4,
    )
    params = [SamplingParams(max_tokens=40, temperature=0)] * len(PROMPTS)
    expected, got = generate(plain, params), generate(tight, params)
    assert max(r["preemptions"] for r in got.values()) > 0
    assert_same_output(got, expected)


def test_no_drafts_while_the_batch_is_larger_than_disable_by_batch_size(smollm2_dir) -> None:
    config = json.loads(SPEC) | {"disable_by_batch_size": 2}
    engine = make_engine(smollm2_dir, json.dumps(config))
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in (40, 8, 8)]
    for i, (prompt, p) in enumerate(zip(PROMPTS, params, strict=True)):
        engine.add_request(str(i), engine.tokenizer(prompt)["input_ids"], p)
    checked_with = []  # how many sequences were in the engine at each step that had drafts
    while engine.has_work:
        in_engine = engine.scheduler.num_running + engine.scheduler.num_waiting
        engine.step()
        if engine.last_step.draft_acceptance:
            checked_with.append(in_engine)
    # The three run together (no drafts) until the short ones finish; then drafts resume.
    assert checked_with and max(checked_with) <= 2
