"""One step's scheduled work as the model's flat inputs, and the tensors its sampling reads.

Every scheduled token becomes one row: its id, its position, the KV slot it writes; prompt
tokens attend in prefills, whatever the scheduler cut or the prefix cache held, and the others
as decodes; the rows whose sequence reaches its last known token are sampled. A decode with
drafts (speculative decoding) is several rows, each attending as a decode of its own over the
tokens up to it, and each sampled: so every token's logits come from the same kernels, with or
without drafts. Built on the host in one pass, then moved to the device in one tensor each.
"""

from __future__ import annotations

import attrs
import torch

from compiled_kernels.attention import AttentionInputs, DecodeGroup, PrefillInputs
from compiled_kernels.sampling import SamplingTensors
from engine.models.linear import LibraryPlan
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence


@attrs.frozen
class StepInputs:
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    attn: AttentionInputs
    sample_rows: torch.Tensor  # [num_sampled] int64: rows whose next token is sampled
    sample_seqs: list[Sequence]  # their sequences, in the same order
    # Rows sampled per sequence of sample_seqs: 1, or 1 + its drafts (they are consecutive).
    sample_counts: list[int]


def prepare_inputs(
    out: SchedulerOutput, block_size: int, device: torch.device, one_decode_group: bool
) -> StepInputs:
    """one_decode_group: all decodes in one group (the C or Triton kernel) rather than one per
    block count (the torch twin; see compiled_kernels/attention.py)."""
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    sample_rows: list[int] = []
    sample_seqs: list[Sequence] = []
    sample_counts: list[int] = []
    decodes: list[tuple[int, Sequence, int]] = []  # (row, seq, context length)
    prefills: list[PrefillInputs] = []
    for seq, num_new in zip(out.seqs, out.num_new_tokens, strict=True):
        row, start, end = (
            len(input_ids),
            seq.num_computed_tokens,
            seq.num_computed_tokens + num_new,
        )
        input_ids += seq.token_ids[start:end]
        input_ids += seq.spec_token_ids[: max(0, end - seq.num_tokens)]  # drafts checked now
        positions += range(start, end)
        slots += [seq.block_table[p // block_size] * block_size + p % block_size
                  for p in range(start, end)]  # fmt: skip
        # By token, not by chunk (as library_plan): prompt tokens attend in a prefill, the
        # others (generated tokens, drafts, or both recomputed after a preemption) each as a
        # decode over the tokens up to it. The two kernels round differently, so a prompt's
        # last token must not turn into a decode when its prefix was cached.
        num_prompt = max(0, min(num_new, seq.num_prompt_tokens - start))
        if num_prompt:
            prefills.append(_prefill(seq, row, num_prompt, device))
        decodes += [(row + i, seq, start + i + 1) for i in range(num_prompt, num_new)]
        if end >= seq.num_tokens:
            count = end - seq.num_tokens + 1  # the last known token's row, then the drafts'
            sample_rows += range(len(input_ids) - count, len(input_ids))
            sample_seqs.append(seq)
            sample_counts.append(count)
    attn = AttentionInputs(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        decodes=_decode_groups(decodes, device, one_decode_group),
        prefills=tuple(prefills),
    )
    return StepInputs(
        torch.tensor(input_ids, dtype=torch.int64, device=device),
        torch.tensor(positions, dtype=torch.int64, device=device),
        attn,
        torch.tensor(sample_rows, dtype=torch.int64, device=device),
        sample_seqs,
        sample_counts,
    )


def _decode_groups(
    decodes: list[tuple[int, Sequence, int]], device: torch.device, one_group: bool
) -> tuple[DecodeGroup, ...]:
    if not decodes:
        return ()
    if one_group:
        return (_decode_group(decodes, device),)
    groups: dict[int, list[tuple[int, Sequence, int]]] = {}
    for member in decodes:
        groups.setdefault(len(member[1].block_table), []).append(member)
    return tuple(_decode_group(members, device) for members in groups.values())


def _decode_group(members: list[tuple[int, Sequence, int]], device: torch.device) -> DecodeGroup:
    num_blocks = max(len(seq.block_table) for _, seq, _ in members)
    tables = [seq.block_table + [0] * (num_blocks - len(seq.block_table))
              for _, seq, _ in members]  # fmt: skip
    return DecodeGroup(
        rows=torch.tensor([row for row, _, _ in members], dtype=torch.int64, device=device),
        block_tables=torch.tensor(tables, dtype=torch.int64, device=device),
        context_lens=torch.tensor(
            [length for _, _, length in members], dtype=torch.int64, device=device
        ),
    )


def _prefill(seq: Sequence, row: int, num_new: int, device: torch.device) -> PrefillInputs:
    """A prefill (or prefill chunk, its first num_new tokens) attends to its cached prefix
    and causally to itself."""
    return PrefillInputs(
        start=row,
        end=row + num_new,
        block_table=torch.tensor(seq.block_table, dtype=torch.int64, device=device),
        context_len=seq.num_computed_tokens + num_new,
    )


def library_plan(out: SchedulerOutput) -> LibraryPlan:
    """For library matmuls: the step's prompt tokens go in position-aligned tiles and the rest
    packed. By token, not by chunk: a prompt token is aligned whether its chunk has one row or
    many, a generated token packed even when a preempted sequence recomputes it, so each
    token's rows never depend on how the scheduler cut the work."""
    chunks: list[tuple[int, int, int]] = []
    in_chunks = torch.zeros(sum(out.num_new_tokens), dtype=torch.bool)
    row = 0
    for seq, num_new in zip(out.seqs, out.num_new_tokens, strict=True):
        start = seq.num_computed_tokens
        num_prompt = max(0, min(num_new, seq.num_prompt_tokens - start))
        if num_prompt:
            chunks.append((row, row + num_prompt, start))
            in_chunks[row : row + num_prompt] = True
        row += num_new
    other_rows = (~in_chunks).nonzero().flatten()
    return LibraryPlan(row, tuple(chunks), other_rows if other_rows.numel() else None)


def sampling_tensors(
    seqs: list[Sequence], vocab_size: int, device: torch.device
) -> SamplingTensors:
    params = [s.params for s in seqs]

    def floats(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    tensors = dict(
        temperature=floats([p.temperature for p in params]),
        top_p=floats([p.top_p for p in params]),
        top_k=torch.tensor([max(p.top_k, 0) for p in params], dtype=torch.int64, device=device),
        min_p=floats([p.min_p for p in params]),
    )
    if any(p.has_penalties for p in params):
        counts = torch.zeros((len(seqs), vocab_size), dtype=torch.float32, device=device)
        seen = torch.zeros((len(seqs), vocab_size), dtype=torch.bool, device=device)
        for row, seq in enumerate(seqs):
            out_ids = torch.tensor(seq.output_token_ids, dtype=torch.int64, device=device)
            counts[row].index_add_(0, out_ids, torch.ones_like(out_ids, dtype=torch.float32))
            seen[row, torch.tensor(seq.token_ids, dtype=torch.int64, device=device)] = True
        tensors.update(
            presence_penalty=floats([p.presence_penalty for p in params]),
            frequency_penalty=floats([p.frequency_penalty for p in params]),
            repetition_penalty=floats([p.repetition_penalty for p in params]),
            output_counts=counts,
            seen_mask=seen,
        )
    return SamplingTensors(**tensors)
