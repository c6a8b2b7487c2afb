"""Paged decode attention for the GPU, in Triton.

The GPU counterpart of csrc/decode_attention.c: every decoding sequence in one launch, each
program reading only its own sequence's KV blocks in place (the torch twin gathers every row's
blocks up to the longest in the batch). One program per (sequence, kv head) handles the query
heads that share that kv head, with an online softmax over a tile of tokens (several blocks) at a
time. It reads the context lengths and block tables from device memory, so a CUDA graph replays
it for any batch contents; a sequence of context length 0 (a padding row) gets zeros. A
sliding window starts each sequence's walk at its window; soft-capping applies to the scores.
"""

from __future__ import annotations

import functools

import torch

from compiled_kernels.masking import NO_MASKING, Masking

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU-only torch wheel comes without Triton
    triton = None


@functools.cache
def available() -> bool:
    return triton is not None and torch.cuda.is_available()


def supports(k_cache: torch.Tensor) -> bool:
    """Whether `paged_decode_attention` can read this cache: on the GPU, with Triton, blocks of a
    power-of-two size, each block's tokens contiguous."""
    block_size, head_dim = k_cache.shape[2:]
    return (
        k_cache.is_cuda
        and available()
        and block_size & (block_size - 1) == 0
        and k_cache.stride()[2:] == (head_dim, 1)
    )


if triton is not None:

    @triton.jit
    def _paged_decode_kernel(
        q_ptr,  # [num_seqs, num_heads, head_dim]
        k_cache_ptr,  # [kv_heads, num_blocks, block_size, head_dim]
        v_cache_ptr,
        block_tables_ptr,  # [num_seqs, max_blocks]
        context_lens_ptr,  # [num_seqs]
        out_ptr,  # [num_seqs, num_heads * head_dim]
        stride_q_seq,
        stride_q_head,
        stride_cache_head,
        stride_cache_block,
        stride_table_seq,
        scale,
        window,  # 0: the whole context
        softcap,  # 0.0: none
        GROUP: tl.constexpr,  # query heads per kv head
        GROUP_PAD: tl.constexpr,  # GROUP rounded up to a power of two
        HEAD_DIM: tl.constexpr,
        DIM_PAD: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        TILE: tl.constexpr,  # tokens per iteration
    ):
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
        context_len = tl.load(context_lens_ptr + seq).to(tl.int32)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, DIM_PAD)
        t = tl.arange(0, TILE)
        heads = kv_head * GROUP + g
        qd_mask = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]
        q_offsets = seq * stride_q_seq + heads[:, None] * stride_q_head + d[None, :]
        q = tl.load(q_ptr + q_offsets, mask=qd_mask, other=0.0).to(tl.float32) * scale

        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)  # running max per head
        denom = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
        head_base = kv_head * stride_cache_head
        # TILE tokens (several KV blocks) per iteration: fewer dependent round trips to memory.
        # The first position the query sees: the window's start, or 0
        first = tl.where(window > 0, tl.maximum(context_len - window, 0), 0)
        for start in range(first // TILE * TILE, context_len, TILE):
            pos = start + t  # [TILE] token positions
            valid = (pos < context_len) & (pos >= first)
            block = tl.load(
                block_tables_ptr + seq * stride_table_seq + pos // BLOCK_SIZE, mask=valid, other=0
            )
            token = block * stride_cache_block + (pos % BLOCK_SIZE) * HEAD_DIM
            kv_offsets = head_base + token[:, None] + d[None, :]  # [TILE, DIM_PAD]
            kv_mask = valid[:, None] & (d < HEAD_DIM)[None, :]
            k = tl.load(k_cache_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
            v = tl.load(v_cache_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
            scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [GROUP_PAD, TILE]
            if softcap > 0:  # softcap * tanh(scores / softcap), tanh(x) = 1 - 2 / (e^2x + 1)
                scores = softcap * (1.0 - 2.0 / (tl.exp(2.0 * scores / softcap) + 1.0))
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            correction = tl.exp(m - m_new)
            p = tl.exp(scores - m_new[:, None])
            denom = denom * correction + tl.sum(p, axis=1)
            acc = acc * correction[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
            m = m_new
        out = acc / tl.where(denom > 0, denom, 1.0)[:, None]
        out_offsets = seq * (GROUP * HEAD_DIM * tl.num_programs(1)) + heads[:, None] * HEAD_DIM
        tl.store(out_ptr + out_offsets + d[None, :], out.to(out_ptr.dtype.element_ty), mask=qd_mask)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    """q: [num_seqs, num_heads, head_dim] -> [num_seqs, num_heads * head_dim].

    k_cache, v_cache: [kv_heads, num_blocks, block_size, head_dim], each block's tokens
    contiguous; block_tables: [num_seqs, max_blocks]; context_lens: [num_seqs], the new token
    included.
    """
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads, _, block_size, _ = k_cache.shape
    assert k_cache.stride()[2:] == (head_dim, 1) and v_cache.stride() == k_cache.stride()
    assert q.stride(2) == 1
    group = num_heads // num_kv_heads
    out = q.new_empty(num_seqs, num_heads * head_dim)
    _paged_decode_kernel[(num_seqs, num_kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), block_tables.stride(0),
        scale, masking.window, masking.softcap,
        GROUP=group, GROUP_PAD=triton.next_power_of_2(group), HEAD_DIM=head_dim,
        DIM_PAD=triton.next_power_of_2(head_dim), BLOCK_SIZE=block_size,
        TILE=max(32, block_size),
    )  # fmt: skip
    return out
