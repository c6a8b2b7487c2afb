"""Sliding-window attention end to end: a tiny random-weight Mistral whose window is shorter
than its sequences decodes greedily exactly like transformers' own class (which masks the same
window), with its prompt in chunks and again from the prefix cache, while the blocks behind the
window go back to the free list as it grows."""

from __future__ import annotations

import pytest
import torch
import transformers

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams
from tests.engine.conftest import TINY, transformers_greedy

WINDOW = 8
BLOCK_SIZE = 4
PROMPT = (
    "The lighthouse keeper counted the ships that passed each night, writing their names in a "
    "ledger that nobody else would ever read, until the winter storms came."
)


@pytest.fixture(scope="module")
def mistral(tmp_path_factory, smollm2_tokenizer):
    path = tmp_path_factory.mktemp("mistral")
    config = transformers.MistralConfig(
        vocab_size=len(smollm2_tokenizer), sliding_window=WINDOW, head_dim=16, **TINY
    )
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).eval()
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("torch_compile", [False, True], ids=["eager", "compiled"])
def test_sliding_window_decodes_like_transformers_and_gives_back_old_blocks(
    mistral, smollm2_tokenizer, torch_compile, tmp_path_factory
):
    model_dir, hf_model = mistral
    engine = LLMEngine(
        Settings(
            dtype="float32",
            kv_cache_memory_gb=0.01,
            block_size=BLOCK_SIZE,
            max_num_batched_tokens=16,  # the prompt goes in chunks
            torch_compile=torch_compile,
            torch_compile_cache_dir=str(tmp_path_factory.getbasetemp() / "inductor"),
        ),
        model_dir,
    )
    assert engine.scheduler.block_manager.sliding_window == WINDOW
    ids = smollm2_tokenizer.encode(PROMPT)
    assert len(ids) > 3 * WINDOW
    expected = transformers_greedy(hf_model, ids, 24)
    blocks = engine.scheduler.block_manager
    for request in ("first", "from the prefix cache"):
        seq = engine.add_request(
            request, ids, SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
        )
        most_held = 0
        while engine.has_work:
            engine.step()
            if not seq.is_finished:
                most_held = max(most_held, len(seq.block_table) - seq.num_released_blocks)
        assert seq.output_token_ids == expected, request
        # Between steps a sequence holds the blocks its next token's window touches.
        assert most_held <= WINDOW // BLOCK_SIZE + 1, request
        blocks.check_invariants()
        assert blocks.num_free_blocks == blocks.num_blocks
    assert seq.num_cached_tokens > 0  # the second run hit the cache
