"""The CPU decode step as a recorded list of kernel calls: one tight loop instead of the model's
Python.

A decode step of a small model on the CPU spends as long in Python as in its kernels: 30 layers
of module calls, tensor views and allocations around ten C calls each. Those calls are the same
every step of a batch size, on the same buffers, so the step can be recorded once and replayed:
`native.recording` keeps each call's kernel and arguments while an ordinary forward runs, and
a replay makes the same calls again, on the same memory, with nothing in between: one C call
(native.Replay) runs the list, so the GIL is released once for the step's kernels, not once per
kernel (the server's event loop shares the GIL).

That holds only if every bit of work in the step is a kernel call: a torch op that computes (a
library GEMM, a copy, an MoE router's top-k) would not be replayed. So the capture watches every
torch op with a dispatch mode; any op that is not an allocation or a view makes the recording
refused, and the model then decodes eagerly as before (the log says which op). The memory the
recorded calls write to (every tensor the capture allocated) is kept alive with the graph.

Like CUDA graphs (engine/cuda_graphs.py), the step is recorded at startup and every input lives
in a static buffer the step copies into before the replay: the embedded tokens, the rotary rows,
KV slots, block tables and context lengths. Unlike them, one recording serves every batch size
up to its own: each kernel takes its row count as an argument (native.ROWS_ARGUMENT), computes
a row from that row alone and keeps rows contiguous, so a replay for n sequences passes n and
works on the first n rows of every buffer. No padding, and one set of buffers (~1.2 MB a row
for SmolLM2-135M). The recording run itself attends to, and writes into, a block no sequence
owns. Batches past MAX_ROWS, prefills and mixed steps run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from compiled_kernels import native
from compiled_kernels.attention import AttentionInputs, DecodeGroup
from engine.models.attention import attention_context

# The most rows a recorded step serves: past it Python is a small share of a step, and every
# row costs the recorded step's buffers memory.
MAX_ROWS = 32

Ropes = list[tuple[torch.Tensor, torch.Tensor]]
# The model between the embedding and the LM head: (hidden [n, hidden_size], per-layer rotary
# rows) -> hidden [n, hidden_size]
DecoderLayers = Callable[[torch.Tensor, Ropes], torch.Tensor]


class _AllocationsAndViewsOnly(TorchDispatchMode):
    """Sees every torch op of the recorded forward: keeps what it allocates (the kernels write
    there on every replay) and notes any op that computes, which a replay would skip."""

    def __init__(self) -> None:
        super().__init__()
        self.allocated: list[torch.Tensor] = []
        self.computing_ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"):
            self.allocated.append(out)
        elif not func.is_view:
            self.computing_ops.append(str(func))
        return out


class CpuGraph:
    """One decode step recorded at MAX_ROWS (or fewer) rows, replayed for any batch up to that."""

    def __init__(
        self,
        decoder_layers: DecoderLayers,
        ropes_of: Callable[[torch.Tensor], Ropes],
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        rows: int,
        hidden_size: int,
        dtype: torch.dtype,
        max_blocks_per_seq: int,
        pad_block: int,
        block_size: int,
    ) -> None:
        self.rows = rows
        self.hidden = torch.zeros(rows, hidden_size, dtype=dtype)
        positions = torch.zeros(rows, dtype=torch.int64)
        # Static copies of the distinct rotary tensors, in the order `_distinct` finds them.
        self.ropes_of = ropes_of
        ropes = ropes_of(positions)
        distinct = _distinct(ropes)
        self.rope_buffers = [t.clone() for t in distinct]
        static = dict(zip(map(id, distinct), self.rope_buffers, strict=True))
        static_ropes = [(static[id(cos)], static[id(sin)]) for cos, sin in ropes]
        # The recording run attends, for every row, to the first slot of a block no sequence
        # owns, and writes its keys and values there.
        self.slot_mapping = torch.full((rows,), pad_block * block_size, dtype=torch.int64)
        self.block_tables = torch.full((rows, max_blocks_per_seq), pad_block, dtype=torch.int64)
        self.context_lens = torch.ones(rows, dtype=torch.int64)
        group = DecodeGroup(torch.arange(rows), self.block_tables, self.context_lens)
        attn = AttentionInputs(slot_mapping=self.slot_mapping, decodes=(group,), prefills=())
        guard = _AllocationsAndViewsOnly()
        with native.recording(rows) as recorder, attention_context(attn, kv_caches), guard:
            self.out = decoder_layers(self.hidden, static_ropes)
        self.calls = [] if recorder is None else recorder.calls
        self.replay = None if recorder is None else native.Replay(recorder.lib, self.calls)
        self._memory = guard.allocated  # the buffers the recorded calls write to
        unreplayable = ["no C kernels"] if recorder is None else recorder.unreplayable
        # Why this step cannot be replayed (empty: it can)
        self.problems = sorted(set(guard.computing_ops + unreplayable))
        self.replays = 0

    def can_run(self, num_tokens: int, attn: AttentionInputs) -> bool:
        """A pure decode step (one group holding every row) of at most `rows` sequences."""
        return (
            not attn.prefills
            and len(attn.decodes) == 1
            and attn.decodes[0].rows.shape[0] == num_tokens
            and num_tokens <= self.rows
            and attn.decodes[0].block_tables.shape[1] <= self.block_tables.shape[1]
        )

    def run(
        self, hidden: torch.Tensor, positions: torch.Tensor, attn: AttentionInputs
    ) -> torch.Tensor:
        """Replays the step for hidden [n, hidden_size] (the embedded tokens) -> [n, hidden_size],
        a view of the graph's output buffer, valid until the next replay."""
        n = hidden.shape[0]
        group = attn.decodes[0]
        self.hidden[:n].copy_(hidden)
        fresh = _distinct(self.ropes_of(positions))
        for buffer, rows in zip(self.rope_buffers, fresh, strict=True):
            buffer[:n].copy_(rows)
        self.slot_mapping[:n].copy_(attn.slot_mapping)
        # Columns past this step's widest table keep stale block ids, never read: the kernel
        # stops at each sequence's context length.
        self.block_tables[:n, : group.block_tables.shape[1]].copy_(group.block_tables)
        self.context_lens[:n].copy_(group.context_lens)
        self.replay(n)
        self.replays += 1
        return self.out[:n]


def _distinct(ropes: Ropes) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for pair in ropes:
        for t in pair:
            seen.setdefault(id(t), t)
    return list(seen.values())
