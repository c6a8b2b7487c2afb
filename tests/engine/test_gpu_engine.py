"""The GPU path: the engine on CUDA decodes like transformers on CUDA, eagerly and through the
CUDA graphs, and the graphs give the eager step's tokens whatever the batch's padding.
Skipped without a GPU."""

from __future__ import annotations

import attrs
import pytest
import torch

from configs.settings import Settings
from engine.cuda_graphs import capture_sizes
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PROMPTS = [
    "Hello there",
    "The quick brown fox jumps",
    "Paged attention keeps the KV cache in fixed-size blocks, so",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "Once upon a time",
]


def _generate(engine: LLMEngine, tokenizer, prompts: list[str], max_tokens: int) -> list[list[int]]:
    seqs = [
        engine.add_request(
            f"r{i}",
            tokenizer.encode(p),
            SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True),
        )
        for i, p in enumerate(prompts)
    ]
    while engine.has_work:
        engine.step()
    return [s.output_token_ids for s in seqs]


@pytest.mark.parametrize("enforce_eager", [True, False], ids=["eager", "cuda_graphs"])
def test_cuda_engine_decodes_like_transformers(tiny_model_dir, smollm2_tokenizer, enforce_eager):
    model_dir, hf_model = tiny_model_dir
    engine = LLMEngine(
        Settings(
            dtype="float32", kv_cache_memory_gb=0.01, enforce_eager=enforce_eager, max_num_seqs=8
        ),
        model_dir,
    )
    assert engine.runner.device.type == "cuda"
    assert (engine.runner.cuda_graphs is None) == enforce_eager
    outputs = _generate(engine, smollm2_tokenizer, PROMPTS, max_tokens=20)
    hf_model = hf_model.cuda()
    for prompt, tokens in zip(PROMPTS, outputs, strict=True):
        ids = smollm2_tokenizer(prompt, return_tensors="pt").input_ids.cuda()
        with torch.no_grad():
            expected = hf_model.generate(
                ids,
                max_new_tokens=20,
                min_new_tokens=20,
                do_sample=False,
                attention_mask=torch.ones_like(ids),
            )[0, ids.shape[1] :].tolist()
        assert tokens == expected, prompt


def test_cuda_graphs_replay_every_batch_size(tiny_model_dir, smollm2_tokenizer):
    """Batches of 1 to 11 sequences replay graphs of 1, 2, 4, 8 and 16 rows (padding rows
    write to the spare block and are dropped), and give the eager engine's tokens; every KV
    block comes back afterwards."""
    model_dir, _ = tiny_model_dir
    settings = Settings(dtype="float32", kv_cache_memory_gb=0.01, max_num_seqs=16)
    graphs = LLMEngine(settings, model_dir)
    eager = LLMEngine(attrs.evolve(settings, enforce_eager=True), model_dir)
    assert graphs.runner.cuda_graphs.sizes == capture_sizes(16) == [1, 2, 4, 8, 16]
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(11)]
    for n in (1, 3, 5, 11):
        assert _generate(graphs, smollm2_tokenizer, prompts[:n], 12) == _generate(
            eager, smollm2_tokenizer, prompts[:n], 12
        )
    manager = graphs.scheduler.block_manager
    assert manager.num_free_blocks == manager.num_blocks


def test_quantization_is_refused_on_the_gpu(tiny_model_dir):
    model_dir, _ = tiny_model_dir
    with pytest.raises(ValueError, match="CPU only"):
        LLMEngine(Settings(quantization="int4", kv_cache_memory_gb=0.01), model_dir)
