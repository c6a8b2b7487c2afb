"""Paged attention and the KV-cache write, against a naive unpaged reference.

The index tensors (AttentionInputs) are built by the real `step_inputs.prepare_inputs` from real
`Sequence`s and a `SchedulerOutput`, so the test covers the kernel exactly as the engine calls it.
Decode attention runs both ways: the C kernel and its torch twin.
"""

from __future__ import annotations

import math

import pytest
import torch

from compiled_kernels import native as native_kernels
from compiled_kernels.attention import (
    AttentionInputs,
    DecodeGroup,
    PrefillInputs,
    decode_attention,
    decode_attention_reference,
    paged_attention,
    prefill_attention,
    prefill_attention_reference,
    write_kv,
    write_kv_reference,
)
from compiled_kernels.masking import NO_MASKING, Masking
from engine.sampling_params import SamplingParams
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence
from engine.step_inputs import prepare_inputs

BLOCK_SIZE = 16
NUM_BLOCKS = 12
NUM_HEADS = 4
NUM_KV_HEADS = 2
HEAD_DIM = 16  # the smallest the C prefill kernel takes (it works in 16-lane vectors)
SCALE = HEAD_DIM**-0.5


NATIVE = native_kernels.load() is not None


@pytest.fixture(
    params=[
        pytest.param(
            True, id="c_kernel", marks=pytest.mark.skipif(not NATIVE, reason="no C compiler")
        ),
        pytest.param(False, id="torch_twin"),
    ]
)
def native(request, monkeypatch) -> bool:
    """Run the test on the C kernels, or with them switched off (every torch twin)."""
    if not request.param:
        monkeypatch.setattr(native_kernels, "load", lambda: None)
    return request.param


def _prepare(out: SchedulerOutput, native: bool = NATIVE) -> tuple[torch.Tensor, AttentionInputs]:
    """The runner's real input preparation, without a model."""
    inputs = prepare_inputs(out, BLOCK_SIZE, torch.device("cpu"), one_decode_group=native)
    return inputs.positions, inputs.attn


def _make_seq(num_tokens: int, num_computed: int, block_table: list[int]) -> Sequence:
    """One new token: a decode (its last token generated); more: a prompt (chunk)."""
    decode = num_tokens - num_computed == 1
    prompt = list(range(1, num_tokens + 1 - decode))
    seq = Sequence("r", prompt, SamplingParams(max_tokens=4))
    if decode:
        seq.append_token(num_tokens)
    seq.num_computed_tokens = num_computed
    seq.block_table = list(block_table)
    assert len(block_table) == math.ceil(num_tokens / BLOCK_SIZE)
    return seq


def _make_batch(
    shapes: list[tuple[int, int]], seed: int = 7
) -> tuple[SchedulerOutput, list[tuple[int, int]]]:
    """shapes: (context length after this step, new tokens) per sequence. Blocks are handed out
    from a shuffled permutation, so tables are non-contiguous and interleaved across sequences."""
    perm = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed)).tolist()
    seqs, used = [], 0
    for ctx, new in shapes:
        n_blocks = math.ceil(ctx / BLOCK_SIZE)
        seqs.append(_make_seq(ctx, ctx - new, perm[used : used + n_blocks]))
        used += n_blocks
    assert used <= NUM_BLOCKS
    # The batch is only meaningful if tables really are out of order.
    assert any(s.block_table != sorted(s.block_table) for s in seqs)
    return SchedulerOutput(seqs=seqs, num_new_tokens=[n for _, n in shapes]), shapes


# A decode (ctx 37), a full prefill (19 tokens) and a chunked prefill (16 cached + 8 new).
MIXED = [(37, 1), (19, 19), (24, 8)]
# Decodes only, at block-boundary and mid-block context lengths.
ALL_DECODE = [(37, 1), (5, 1), (16, 1), (33, 1)]


# (model dtype, KV cache dtype): the cache in the model's type, or bfloat16 under a float32
# model (--kv-cache-dtype bfloat16).
DTYPES = [
    pytest.param(torch.float32, torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, torch.bfloat16, id="bf16"),
    pytest.param(torch.float32, torch.bfloat16, id="fp32_bf16_cache"),
]


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 2e-2


@pytest.fixture
def mixed_batch() -> tuple[SchedulerOutput, list[tuple[int, int]]]:
    return _make_batch(MIXED)


def _reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_start: int,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    """Plain causal softmax attention in float64 for one sequence (within the window, with the
    scores soft-capped, where `masking` says).

    q: [n_new, heads, dim] at positions q_start..; k, v: [ctx, kv_heads, dim] (unpaged).
    Returns [n_new, heads * dim].
    """
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [ctx, heads, dim]
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * SCALE
    if masking.softcap:
        scores = masking.softcap * torch.tanh(scores / masking.softcap)
    q_pos = torch.arange(q_start, q_start + q.shape[0])[:, None]
    k_pos = torch.arange(k.shape[0])[None, :]
    hidden = k_pos > q_pos
    if masking.window:
        hidden |= k_pos <= q_pos - masking.window
    scores = scores.masked_fill(hidden, float("-inf"))
    out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out.reshape(q.shape[0], -1)


def _empty_cache(dtype: torch.dtype, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (NUM_KV_HEADS, NUM_BLOCKS, BLOCK_SIZE, HEAD_DIM)  # head-major, as the runner
    return torch.full(shape, fill, dtype=dtype), torch.full(shape, fill, dtype=dtype)


@pytest.mark.parametrize(("dtype", "cache_dtype"), DTYPES)
def test_write_kv_puts_each_token_at_its_slot(mixed_batch, native: bool, dtype, cache_dtype):
    out, shapes = mixed_batch
    positions, attn = _prepare(out)
    num_tokens = sum(n for _, n in shapes)
    # Strided rows, as the model passes them (k and v are slices of wider projections).
    k = torch.randn(num_tokens, NUM_KV_HEADS + 1, HEAD_DIM).to(dtype)[:, 1:]
    v = torch.randn(num_tokens, NUM_KV_HEADS + 2, HEAD_DIM).to(dtype)[:, :NUM_KV_HEADS]
    sentinel = -123.0
    k_cache, v_cache = _empty_cache(cache_dtype, sentinel)

    (write_kv if native else write_kv_reference)(k, v, k_cache, v_cache, attn.slot_mapping)

    written = torch.zeros(NUM_BLOCKS, BLOCK_SIZE, dtype=torch.bool)
    row = 0
    for seq, n in zip(out.seqs, out.num_new_tokens, strict=True):
        for pos in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
            block, offset = seq.block_table[pos // BLOCK_SIZE], pos % BLOCK_SIZE
            assert attn.slot_mapping[row].item() == block * BLOCK_SIZE + offset
            assert positions[row].item() == pos
            # Rounded to the cache's type as torch rounds (to nearest even), if it differs.
            assert torch.equal(k_cache[:, block, offset], k[row].to(cache_dtype))
            assert torch.equal(v_cache[:, block, offset], v[row].to(cache_dtype))
            written[block, offset] = True
            row += 1
    assert row == num_tokens
    # Nothing else in either cache was touched.
    assert (k_cache[:, ~written] == sentinel).all()
    assert (v_cache[:, ~written] == sentinel).all()


# Sliding windows shorter than a block, spanning blocks, and longer than any context here;
# Gemma 2's soft-capping, alone and with a window.
MASKINGS = [
    NO_MASKING,
    Masking(window=5),
    Masking(window=20),
    Masking(window=64),
    Masking(softcap=2.0),
    Masking(window=9, softcap=3.0),
]


@pytest.mark.parametrize("masking", MASKINGS, ids=str)
@pytest.mark.parametrize("shapes", [MIXED, ALL_DECODE], ids=["mixed", "all_decode"])
@pytest.mark.parametrize(("dtype", "cache_dtype"), DTYPES)
def test_paged_attention_matches_naive_reference(
    shapes: list[tuple[int, int]],
    dtype: torch.dtype,
    cache_dtype: torch.dtype,
    masking: Masking,
    native: bool,
) -> None:
    out, shapes = _make_batch(shapes)
    _positions, attn = _prepare(out, native)
    gen = torch.Generator().manual_seed(0)
    # Full, unpaged k/v for every position of every sequence, plus this step's queries.
    ks = [torch.randn(ctx, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(dtype) for ctx, _ in shapes]
    vs = [torch.randn(ctx, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(dtype) for ctx, _ in shapes]
    qs = [torch.randn(new, NUM_HEADS, HEAD_DIM, generator=gen).to(dtype) for _, new in shapes]

    # Stale but finite garbage in the cache: masking must keep it out of every output.
    k_cache, v_cache = _empty_cache(cache_dtype)
    k_cache.copy_(torch.randn(k_cache.shape, generator=gen) * 50)
    v_cache.copy_(torch.randn(v_cache.shape, generator=gen) * 50)
    # Tokens computed in earlier steps are already in the cache (written directly by slot) ...
    for seq, k, v in zip(out.seqs, ks, vs, strict=True):
        for pos in range(seq.num_computed_tokens):
            block, offset = seq.block_table[pos // BLOCK_SIZE], pos % BLOCK_SIZE
            k_cache[:, block, offset], v_cache[:, block, offset] = k[pos], v[pos]
    # ... and this step's tokens go in through write_kv, as the model does before attending.
    new_k = torch.cat([k[ctx - new :] for k, (ctx, new) in zip(ks, shapes, strict=True)])
    new_v = torch.cat([v[ctx - new :] for v, (ctx, new) in zip(vs, shapes, strict=True)])
    write_kv(new_k, new_v, k_cache, v_cache, attn.slot_mapping)

    result = paged_attention(torch.cat(qs), k_cache, v_cache, attn, SCALE, masking)

    assert result.shape == (sum(n for _, n in shapes), NUM_HEADS * HEAD_DIM)
    assert result.dtype == dtype
    # Against the keys and values as the cache holds them: a bfloat16 cache rounds them, and
    # float32 attention over the rounded values is then as exact as over float32 ones.
    expected = torch.cat(
        [
            _reference(q, k.to(cache_dtype), v.to(cache_dtype), ctx - new, masking)
            for q, k, v, (ctx, new) in zip(qs, ks, vs, shapes, strict=True)
        ]
    )
    tol = _tolerance(dtype)
    torch.testing.assert_close(result.double(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("shapes", [MIXED, ALL_DECODE], ids=["mixed", "all_decode"])
@pytest.mark.parametrize(("dtype", "cache_dtype"), DTYPES)
def test_paged_attention_decode_alone_equals_decode_in_batch(
    shapes: list[tuple[int, int]], dtype: torch.dtype, cache_dtype: torch.dtype, native: bool
) -> None:
    """A decode's output is bitwise the same alone as in a batch with prefills and decodes."""
    out, shapes = _make_batch(shapes)
    gen = torch.Generator().manual_seed(1)
    shape = (NUM_KV_HEADS, NUM_BLOCKS, BLOCK_SIZE, HEAD_DIM)
    k_cache = torch.randn(shape, generator=gen).to(cache_dtype)
    v_cache = torch.randn(shape, generator=gen).to(cache_dtype)
    q = torch.randn(sum(n for _, n in shapes), NUM_HEADS, HEAD_DIM, generator=gen).to(dtype)

    _, attn_batch = _prepare(out, native)
    batched = paged_attention(q, k_cache, v_cache, attn_batch, SCALE)
    _, attn_alone = _prepare(SchedulerOutput(seqs=out.seqs[:1], num_new_tokens=[1]), native)
    alone = paged_attention(q[:1], k_cache, v_cache, attn_alone, SCALE)

    assert torch.equal(alone[0], batched[0])


@pytest.mark.skipif(not NATIVE, reason="no C compiler")
@pytest.mark.parametrize("masking", [NO_MASKING, Masking(window=300)], ids=str)
@pytest.mark.parametrize(("dtype", "cache_dtype"), DTYPES)
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"),
    [
        (9, 3, 64),  # SmolLM2: one tile of 3 query heads, 4 chunks of 16
        (8, 2, 128),  # 4 query heads a kv head: two tiles of 2
        (7, 7, 80),  # one query head a kv head, 5 chunks
        (6, 1, 24),  # two tiles of 3; 24 is no multiple of 16: the element-wise path
    ],
    ids=str,
)
def test_decode_c_kernel_matches_torch_twin_at_model_shapes(
    dtype: torch.dtype,
    cache_dtype: torch.dtype,
    masking: Masking,
    heads: int,
    kv_heads: int,
    dim: int,
) -> None:
    """SmolLM2's heads (9 query, 3 kv, dim 64) and other groupings and sizes, long uneven
    contexts (one to five of the kernel's 256-key parts; a window that starts inside a part), a
    strided q as the model passes it (q and k heads share rows): one call for all sequences
    agrees with the twin, and each sequence alone gets bitwise its row of the batch."""
    gen = torch.Generator().manual_seed(2)
    blocks = 90
    k_cache = torch.randn(kv_heads, blocks, BLOCK_SIZE, dim, generator=gen).to(cache_dtype)
    v_cache = torch.randn(kv_heads, blocks, BLOCK_SIZE, dim, generator=gen).to(cache_dtype)
    k_cache *= 4  # scores spread wide, so that the parts' maxima differ and their merge matters
    context_lens = [1, 17, 511, 1100]
    tables = torch.randint(0, blocks, (4, 70), generator=gen)  # 70 blocks hold 1120 tokens
    qk = torch.randn(4, heads + kv_heads, dim, generator=gen).to(dtype)
    q = qk[:, :heads]  # rows (heads + kv_heads) * dim apart
    scale = dim**-0.5

    def sequences(rows: slice) -> DecodeGroup:
        lens = torch.tensor(context_lens[rows])
        return DecodeGroup(rows=torch.arange(4)[rows], block_tables=tables[rows], context_lens=lens)

    result = decode_attention(q, k_cache, v_cache, sequences(slice(None)), scale, masking)

    for i, ctx in enumerate(context_lens):
        num_blocks = -(-ctx // BLOCK_SIZE)
        keys = torch.arange(num_blocks * BLOCK_SIZE)
        mask = keys < ctx
        if masking.window:
            mask &= keys >= ctx - masking.window
        expected = decode_attention_reference(
            q[i : i + 1], k_cache, v_cache, tables[i : i + 1, :num_blocks],
            mask[None, None, None, :], scale,
        )  # fmt: skip
        tol = _tolerance(dtype)
        torch.testing.assert_close(result[i : i + 1], expected, atol=tol, rtol=tol)
        alone = decode_attention(
            q[i : i + 1], k_cache, v_cache, sequences(slice(i, i + 1)), scale, masking
        )
        assert torch.equal(alone, result[i : i + 1])


@pytest.mark.skipif(not NATIVE, reason="no C compiler")
@pytest.mark.parametrize(
    "masking", [NO_MASKING, Masking(window=100), Masking(window=37, softcap=5.0)], ids=str
)
@pytest.mark.parametrize(("dtype", "cache_dtype"), DTYPES)
def test_prefill_c_kernel_matches_sdpa_twin_and_chunks_match_full(
    dtype: torch.dtype, cache_dtype: torch.dtype, masking: Masking
) -> None:
    """SmolLM2's heads over a 300-token context in shuffled blocks: the C kernel agrees with
    the SDPA twin, and rows computed as a chunk after a cached prefix (150 cached + 77 new, not
    aligned to the kernel's blocks of queries) are bitwise the rows of the full prefill; with a
    sliding window (and soft-capping) too."""
    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, dim, blocks, ctx = 9, 3, 64, 24, 300
    k_cache = torch.randn(kv_heads, blocks, BLOCK_SIZE, dim, generator=gen).to(cache_dtype)
    v_cache = torch.randn(kv_heads, blocks, BLOCK_SIZE, dim, generator=gen).to(cache_dtype)
    table = torch.randperm(blocks, generator=gen)[: -(-ctx // BLOCK_SIZE)]
    qk = torch.randn(ctx, heads + kv_heads, dim, generator=gen).to(dtype)
    q = qk[:, :heads]  # strided rows, as the model passes q
    scale = dim**-0.5

    full = PrefillInputs(start=0, end=ctx, block_table=table, context_len=ctx)
    result = prefill_attention(q, k_cache, v_cache, full, scale, masking)
    expected = prefill_attention_reference(q, k_cache, v_cache, full, scale, masking)
    tol = 2 * _tolerance(dtype) if dtype == torch.float32 else _tolerance(dtype)
    torch.testing.assert_close(result, expected, atol=tol, rtol=tol)

    chunk = PrefillInputs(start=0, end=77, block_table=table, context_len=227)
    rows = prefill_attention(q[150:227], k_cache, v_cache, chunk, scale, masking)
    assert torch.equal(rows, result[150:227])
    torch.testing.assert_close(
        rows, prefill_attention_reference(q[150:227], k_cache, v_cache, chunk, scale, masking),
        atol=tol, rtol=tol,
    )  # fmt: skip
