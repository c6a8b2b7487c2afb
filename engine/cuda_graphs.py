"""The GPU decode step as CUDA graphs: one replay instead of hundreds of kernel launches.

A decode step of a small model is bound by launching kernels, not by running them: 30 layers of
norms, projections, rotary, attention and MLP are several hundred launches for a few
microseconds of work each. A CUDA graph records them once and replays them in one call.

A graph has fixed shapes, so graphs are captured at startup for a ladder of batch sizes (largest
first, all in one memory pool, so the smaller ones reuse the largest one's memory), and a step
of n sequences replays the smallest graph that fits, with the extra rows as padding. Every input
lives in a static buffer that the step copies into before the replay: token ids, positions, KV
slots, block tables and context lengths. Padding rows write their K/V to a scratch slot that no
sequence owns and, with a context length of 0, attend to nothing; their outputs are dropped.
Prefills and mixed steps run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from compiled_kernels.attention import AttentionInputs, DecodeGroup
from engine.models.attention import attention_context

ModelForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def capture_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, then multiples of 8 up to the first one >= max_batch."""
    sizes = [s for s in (1, 2, 4) if s < max_batch]
    return sizes + list(range(8, max_batch + 8, 8)) if max_batch > 4 else sizes + [max_batch]


class CudaGraphDecoder:
    def __init__(
        self,
        model_forward: ModelForward,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        max_batch: int,
        max_blocks_per_seq: int,
        pad_slot: int,
        device: torch.device,
    ) -> None:
        self.sizes = capture_sizes(max_batch)
        self.pad_slot = pad_slot
        largest = self.sizes[-1]

        def buffer(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.int64, device=device)

        self.input_ids = buffer(largest)
        self.positions = buffer(largest)
        self.slot_mapping = buffer(largest).fill_(pad_slot)
        self.block_tables = buffer(largest, max_blocks_per_seq)
        self.context_lens = buffer(largest)  # 0 until a step fills it: padding attends to nothing
        self.rows = torch.arange(largest, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

        pool = None
        for size in reversed(self.sizes):
            with attention_context(self._attention_inputs(size), kv_caches):
                # An eager run first: lazy initialisation and kernel compilation (Triton,
                # cuBLAS handles) must not happen inside the capture.
                model_forward(self.input_ids[:size], self.positions[:size])
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    hidden = model_forward(self.input_ids[:size], self.positions[:size])
            pool = graph.pool()
            self.graphs[size] = (graph, hidden)
        torch.cuda.synchronize()

    def _attention_inputs(self, size: int) -> AttentionInputs:
        group = DecodeGroup(
            rows=self.rows[:size],
            block_tables=self.block_tables[:size],
            context_lens=self.context_lens[:size],
        )
        return AttentionInputs(slot_mapping=self.slot_mapping[:size], decodes=(group,), prefills=())

    def can_run(self, num_tokens: int, attn: AttentionInputs) -> bool:
        """A pure decode step (one group holding every row) that the largest graph fits."""
        return (
            not attn.prefills
            and len(attn.decodes) == 1
            and attn.decodes[0].rows.shape[0] == num_tokens
            and num_tokens <= self.sizes[-1]
            and attn.decodes[0].block_tables.shape[1] <= self.block_tables.shape[1]
        )

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionInputs
    ) -> torch.Tensor:
        """Replays the graph for this step: [n] token ids -> hidden [n, hidden_size].

        The result is a view of the graph's output buffer, valid until the next replay.
        """
        n = input_ids.shape[0]
        size = next(s for s in self.sizes if s >= n)
        group = attn.decodes[0]
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(attn.slot_mapping)
        self.slot_mapping[n:size].fill_(self.pad_slot)
        # Columns past this step's widest table keep stale block ids, never read: the kernel
        # stops at each sequence's context length.
        self.block_tables[:n, : group.block_tables.shape[1]].copy_(group.block_tables)
        self.context_lens[:n].copy_(group.context_lens)
        self.context_lens[n:size].zero_()
        graph, hidden = self.graphs[size]
        graph.replay()
        return hidden[:n]
