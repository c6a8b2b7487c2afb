"""Shared set-up for the scheduler and prefix-cache tests: a small scheduler, no torch."""

from __future__ import annotations

from engine.block_manager import BlockManager
from engine.scheduler import Scheduler

EOS = 2
TOKEN = 7  # what the fake model samples unless told otherwise


def make_scheduler(
    *,
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 64,
    max_model_len: int = 64,
    enable_prefix_caching: bool = True,
    long_prefill_token_threshold: int = 0,
) -> Scheduler:
    return Scheduler(
        BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        eos_token_ids=frozenset({EOS}),
        long_prefill_token_threshold=long_prefill_token_threshold,
    )
