"""Any local HF folder loads: tiny random-weight Llama (untied head; also with Llama 3.1 rope
scaling), Phi-3 (fused q/k/v and gate/up, LongRoPE, partial rotary, a sliding window), Qwen2
(qkv bias), Qwen3 (per-head q/k norms), Granite (its multipliers), OLMo 2 (post-norms), Mixtral
and Qwen3-MoE (experts), Gemma 2 (soft-capping, alternating sliding windows) and Gemma 3 (local
and global rope) checkpoints, saved by transformers, decode greedily exactly like transformers
itself."""

from __future__ import annotations

import pytest
import torch

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams
from tests.engine.conftest import transformers_greedy


@pytest.mark.parametrize("torch_compile", [False, True], ids=["eager", "compiled"])
def test_tiny_checkpoint_decodes_like_transformers(
    tiny_model_dir, smollm2_tokenizer, torch_compile, tmp_path_factory
):
    """Eager, and compiled with torch.compile (the one dynamic graph serves prefills of every
    length and the decode steps, padded to its minimum of rows)."""
    model_dir, hf_model = tiny_model_dir
    settings = Settings(
        dtype="float32",
        kv_cache_memory_gb=0.01,
        torch_compile=torch_compile,
        torch_compile_cache_dir=str(tmp_path_factory.getbasetemp() / "inductor"),
    )
    engine = LLMEngine(settings, model_dir)
    engine.warm_up()
    prompts = ["Hello there", "The quick brown fox jumps"]
    seqs = [
        engine.add_request(
            f"r{i}",
            smollm2_tokenizer.encode(p),
            SamplingParams(max_tokens=12, temperature=0, ignore_eos=True),
        )
        for i, p in enumerate(prompts)
    ]
    while engine.has_work:
        engine.step()
    for prompt, seq in zip(prompts, seqs, strict=True):
        expected = transformers_greedy(hf_model, smollm2_tokenizer.encode(prompt), 12)
        assert seq.output_token_ids == expected, prompt


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_engine_generates_from_a_local_checkpoint(
    tiny_model_dir, smollm2_tokenizer, quantization
):
    model_dir, _ = tiny_model_dir
    engine = LLMEngine(
        Settings(dtype="bfloat16", quantization=quantization, kv_cache_memory_gb=0.01), model_dir
    )
    seq = engine.add_request(
        "q",
        smollm2_tokenizer.encode("Hello there"),
        SamplingParams(max_tokens=8, temperature=0, ignore_eos=True),
    )
    while engine.has_work:
        engine.step()
    assert seq.num_output_tokens == 8
    assert all(0 <= t < engine.vocab_size for t in seq.output_token_ids)


LONG_PROMPT = (
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm "
    "windowsill of the old farmhouse at the end of the lane."
)


def test_teacher_forced_logprobs_and_chunked_cached_prefills_match_transformers(
    tiny_model_dir, smollm2_tokenizer
):
    """Teacher-forced: every prompt token's log-probability (prompt_logprobs) is transformers'
    within float32 rounding. Then the prompt fed in chunks of 8 tokens over 4-token blocks, and
    again from the prefix cache, decodes transformers' greedy tokens (for the windowed
    families, the chunks and cached blocks cross their windows)."""
    model_dir, hf_model = tiny_model_dir
    settings = Settings(
        dtype="float32", kv_cache_memory_gb=0.01, block_size=4, max_num_batched_tokens=8
    )
    engine = LLMEngine(settings, model_dir)
    ids = smollm2_tokenizer.encode(LONG_PROMPT)
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0].float()  # [len(ids), vocab]
    expected_logprobs = logits[:-1].log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])

    scored = engine.add_request("score", ids, SamplingParams(max_tokens=1, prompt_logprobs=0))
    prompt_logprobs = None
    while engine.has_work:
        for seq, out in engine.step():
            if seq is scored and out.prompt_logprobs is not None:
                prompt_logprobs = out.prompt_logprobs
    assert prompt_logprobs is not None and prompt_logprobs[0] is None
    assert [e.token_id for e in prompt_logprobs[1:]] == ids[1:]
    ours = torch.tensor([e.logprob for e in prompt_logprobs[1:]])
    torch.testing.assert_close(ours, expected_logprobs[:, 0], atol=2e-3, rtol=1e-4)

    greedy = transformers_greedy(hf_model, ids, 10)
    for run in ("chunked", "from the prefix cache"):
        seq = engine.add_request(
            run, ids, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
        )
        while engine.has_work:
            engine.step()
        assert seq.output_token_ids == greedy, run
    assert seq.num_cached_tokens >= len(ids) - 4
