"""A prompt's output does not depend on how much of it was cached: its tokens and logprobs are
bitwise those of the uncached run, whatever the cut, a one-token remainder included (prompt
tokens always attend through the prefill kernel, whose rows do not depend on the chunk)."""

from __future__ import annotations

import pytest

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams

# 33 tokens (the embedded chat template around "Say hi."): two full blocks of 16 and one more.
PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
)
PARAMS = SamplingParams(max_tokens=8, temperature=0, logprobs=5, ignore_eos=True)


def _generate(engine: LLMEngine, request_id: str, ids: list[int], params=PARAMS) -> list:
    seq = engine.add_request(request_id, ids, params)
    outputs = []
    while engine.has_work:
        outputs += [out for s, out in engine.step() if s is seq]
    return [(o.new_token_ids, o.logprobs) for o in outputs]


@pytest.mark.parametrize("quantization", ["none", "int4"])
def test_output_is_the_same_whatever_part_of_the_prompt_was_cached(smollm2_dir, quantization):
    settings = dict(dtype="float32", quantization=quantization, block_size=16, max_model_len=256)
    uncached = LLMEngine(Settings(enable_prefix_caching=False, **settings), smollm2_dir)
    ids = uncached.tokenizer(PROMPT)["input_ids"]
    assert len(ids) == 33
    expected = _generate(uncached, "alone", ids)
    for cached_tokens in (16, 32):  # remainders of 17 tokens and of 1
        engine = LLMEngine(Settings(enable_prefix_caching=True, **settings), smollm2_dir)
        _generate(engine, "prefix", ids[:cached_tokens], SamplingParams(max_tokens=1))
        assert _generate(engine, "whole", ids) == expected, cached_tokens
        assert engine.scheduler.block_manager.num_hit_tokens == cached_tokens
