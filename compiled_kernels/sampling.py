"""Turn a batch of logits into next tokens: penalties, temperature, top-k/top-p/min-p, sampling.

Each row may have its own settings. Seeded rows draw from their own generator, so a seeded
request gives the same tokens whatever else is in the batch.
"""

from __future__ import annotations

import attrs
import torch

from compiled_kernels import native


@attrs.frozen
class SamplingTensors:
    temperature: torch.Tensor  # [num_seqs] float32; 0 = greedy
    top_p: torch.Tensor  # [num_seqs] float32
    top_k: torch.Tensor  # [num_seqs] int64; 0 = off
    min_p: torch.Tensor  # [num_seqs] float32
    # Penalties, None when no row uses them (the common case: no [num_seqs, vocab] work).
    presence_penalty: torch.Tensor | None = None  # [num_seqs]
    frequency_penalty: torch.Tensor | None = None  # [num_seqs]
    repetition_penalty: torch.Tensor | None = None  # [num_seqs]
    output_counts: torch.Tensor | None = None  # [num_seqs, vocab] float32: output token counts
    seen_mask: torch.Tensor | None = None  # [num_seqs, vocab] bool: in prompt or output


def apply_penalties(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    # logits: [num_seqs, vocab] float32
    if t.repetition_penalty is not None:
        rep = t.repetition_penalty[:, None]
        penalised = torch.where(logits > 0, logits / rep, logits * rep)
        logits = torch.where(t.seen_mask, penalised, logits)
    if t.frequency_penalty is not None:
        logits = logits - t.frequency_penalty[:, None] * t.output_counts
        logits = logits - t.presence_penalty[:, None] * (t.output_counts > 0).float()
    return logits


def filter_logits(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p as -inf masks. logits: [num_seqs, vocab]."""
    temperature = torch.where(t.temperature > 0, t.temperature, torch.ones_like(t.temperature))
    logits = logits / temperature[:, None]
    if not bool(((t.top_k > 0) | (t.top_p < 1) | (t.min_p > 0)).any()):
        return logits  # no row filters (the default): skip the sort of every row's vocabulary
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    ranks = torch.arange(vocab, device=logits.device)[None, :]
    top_k = torch.where(t.top_k > 0, t.top_k, torch.full_like(t.top_k, vocab))
    remove = ranks >= top_k[:, None]
    probs = sorted_logits.softmax(dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    mass_before = probs.cumsum(dim=-1) - probs
    remove |= mass_before >= t.top_p[:, None]
    remove |= probs < t.min_p[:, None] * probs[:, :1]
    remove[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


def sample(
    logits: torch.Tensor, t: SamplingTensors, generators: list[torch.Generator | None]
) -> torch.Tensor:
    """logits: [num_seqs, vocab] float32 -> tokens: [num_seqs] int64."""
    logits = apply_penalties(logits, t)
    greedy = argmax(logits)
    if bool((t.temperature == 0).all()):
        return greedy
    probs = filter_logits(logits, t).softmax(dim=-1)
    # Exponential race (Gumbel-max): argmax(p / E) with E ~ Exp(1) draws from p, and lets each
    # seeded row use its own generator.
    noise = torch.empty_like(probs).exponential_()
    for row, gen in enumerate(generators):
        if gen is not None:
            noise[row].exponential_(generator=gen)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(t.temperature == 0, greedy, sampled)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits: [num_seqs, vocab] -> [num_seqs] int64, torch.argmax's indices (ties: the first)."""
    lib = native.kernels_for(logits)
    if lib is None or logits.dtype is not torch.float32 or not logits.is_contiguous():
        return logits.argmax(dim=-1)
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    lib.argmax_rows(
        logits.data_ptr(), out.data_ptr(), logits.shape[0], logits.shape[1],
        torch.get_num_threads(),
    )  # fmt: skip
    return out


def sampling_logprobs(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Log-probabilities of the distribution each row's token is drawn from: after penalties,
    and for sampled rows after temperature, top-k, top-p and min-p (tokens those remove get
    -inf). Greedy rows report the penalised logits' softmax.

    logits: [num_seqs, vocab] float32 (the same that `sample` took) -> [num_seqs, vocab].
    """
    logits = apply_penalties(logits, t)
    filtered = filter_logits(logits, t)
    greedy = (t.temperature == 0)[:, None]
    return torch.where(greedy, logits, filtered).log_softmax(dim=-1)
