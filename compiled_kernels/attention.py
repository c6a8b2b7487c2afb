"""Paged attention over a block-structured KV cache.

Decode tokens (one new token per sequence) go through the C kernel in csrc/decode_attention.c
when it is built (compiled_kernels/native.py), or on the GPU through the Triton kernel in
triton_attention.py: every decoding sequence in one call, reading its keys and values in
place. Their torch twin, `decode_attention_reference`, gathers the blocks and runs batched
matmuls; it serves where neither can (no compiler; a GPU without Triton) and as the
reference in tests. It needs the decodes grouped by number of KV blocks, so that a group's
shapes, and with them the GEMM kernels' rounding, depend only on that block count. Each prefill
(or prefill chunk) attends on its own to exactly its own context with SDPA. So no result depends
on what else is in the batch, and a request decodes the same alone or among others. The caller
builds the index tensors once per step (AttentionInputs); every layer reuses them.

Each layer brings its own `Masking`: a sliding window (the query sees only the last `window`
positions, itself included; blocks before that are never read) and Gemma 2's soft-capping of
the scores (softcap * tanh(score / softcap), before the softmax).
"""

from __future__ import annotations

import ctypes

import attrs
import torch
import torch.nn.functional as F

from compiled_kernels import native, triton_attention
from compiled_kernels.masking import NO_MASKING, Masking


@attrs.frozen
class PrefillInputs:
    start: int  # rows [start, end) of the flat batch are this sequence's new tokens
    end: int
    block_table: torch.Tensor  # [num_blocks] int64, covering the context
    context_len: int  # cached tokens + new tokens


@attrs.frozen
class DecodeGroup:
    """Decoding sequences attended to in one kernel call.

    For the C and Triton kernels, all of a step's decodes; for the torch twin, those that hold
    the same number of KV blocks.
    """

    rows: torch.Tensor  # [num_seqs] int64: their rows in the flat batch
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int64, padded with 0 past the last block
    context_lens: torch.Tensor  # [num_seqs] int64: tokens to attend to, the new one included


@attrs.frozen
class AttentionInputs:
    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token
    decodes: tuple[DecodeGroup, ...]
    prefills: tuple[PrefillInputs, ...]


def _kernels_for(
    k_cache: torch.Tensor, v_cache: torch.Tensor, *tensors: torch.Tensor
) -> ctypes.CDLL | native.Recorder | None:
    """The C kernels' library when the model's tensors and the cache can go to them: each of
    one element type (the cache's may differ from the model's: --kv-cache-dtype)."""
    lib = native.kernels_for(*tensors)
    return lib if lib is not None and native.kernels_for(k_cache, v_cache) is not None else None


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    # k, v: [num_tokens, kv_heads, head_dim]; caches: [kv_heads, num_blocks, block_size, head_dim]
    lib = _kernels_for(k_cache, v_cache, k, v)
    num_kv_heads, head_dim = k.shape[1:]
    rows_ok = k.stride(2) == v.stride(2) == 1 and k.stride(1) == v.stride(1) == head_dim
    if lib is None or not rows_ok or not k_cache.is_contiguous() or not v_cache.is_contiguous():
        return write_kv_reference(k, v, k_cache, v_cache, slot_mapping)
    lib.write_kv(
        k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), k_cache.data_ptr(),
        v_cache.data_ptr(), slot_mapping.data_ptr(), slot_mapping.shape[0], num_kv_heads,
        head_dim, k_cache.shape[1] * k_cache.shape[2], k.dtype == torch.bfloat16,
        k_cache.dtype == torch.bfloat16,
    )  # fmt: skip


def write_kv_reference(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    num_kv_heads, head_dim = k.shape[1:]
    k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)  # (rounded to nearest even, as the C kernel)
    k_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, slot_mapping, k.transpose(0, 1))
    v_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, slot_mapping, v.transpose(0, 1))


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    inputs: AttentionInputs,
    scale: float,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    # q: [num_rows, num_heads, head_dim] -> [num_rows, num_heads * head_dim]; rows that are no
    # sequence's token (padding) stay zero.
    decodes = inputs.decodes
    if len(decodes) == 1 and not inputs.prefills and decodes[0].rows.shape[0] == q.shape[0]:
        # A pure decode step, the common case: its rows are all of q's, in order.
        return decode_attention(q, k_cache, v_cache, decodes[0], scale, masking)
    out = q.new_zeros(q.shape[0], q.shape[1] * q.shape[2])
    for g in decodes:
        out[g.rows] = decode_attention(q[g.rows], k_cache, v_cache, g, scale, masking)
    for p in inputs.prefills:
        rows = slice(p.start, p.end)
        out[rows] = prefill_attention(q[rows], k_cache, v_cache, p, scale, masking)
    return out


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    group: DecodeGroup,
    scale: float,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    """The C kernel (csrc/decode_attention.c) or on the GPU the Triton one, where they can run;
    else the torch twin, which needs the group's sequences to hold equally many blocks (the
    runner groups them so).

    q: [num_seqs, num_heads, head_dim] -> [num_seqs, num_heads * head_dim]
    """
    if triton_attention.supports(k_cache) and q.stride(2) == 1:
        return triton_attention.paged_decode_attention(
            q, k_cache, v_cache, group.block_tables, group.context_lens, scale, masking
        )
    lib = _kernels_for(k_cache, v_cache, q)
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads, num_blocks, block_size, _ = k_cache.shape
    block_tables = group.block_tables
    if lib is None or q.stride(2) != 1 or q.stride(1) != head_dim:
        # [1, num_seqs, 1, num_blocks * block_size] bool: key position < context length (and
        # within the window)
        keys = torch.arange(block_tables.shape[1] * block_size, device=q.device)[None, :]
        lens = group.context_lens[:, None]
        mask = keys < lens
        if masking.window:
            mask &= keys >= lens - masking.window
        return decode_attention_reference(
            q, k_cache, v_cache, block_tables, mask[None, :, None, :], scale, masking.softcap
        )
    block_tables, context_lens = block_tables.contiguous(), group.context_lens.contiguous()
    out = q.new_empty(num_seqs, num_heads * head_dim)
    status = lib.paged_decode_attention(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), block_tables.data_ptr(),
        context_lens.data_ptr(), out.data_ptr(), num_seqs, num_heads, num_kv_heads, head_dim,
        block_size, num_blocks, block_tables.shape[1], q.stride(0), scale, masking.window,
        masking.softcap, q.dtype == torch.bfloat16, k_cache.dtype == torch.bfloat16,
        torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"paged_decode_attention failed ({status}) for q {tuple(q.shape)}")
    return out


def decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    softcap: float = 0.0,
) -> torch.Tensor:
    """The torch twin of `decode_attention`, for one group of sequences with equal block counts.

    q: [num_seqs, num_heads, head_dim] (one token each) -> [num_seqs, num_heads * head_dim]
    """
    num_seqs, num_heads, head_dim = q.shape
    if num_seqs == 1:
        # A lone GEMM takes another BLAS kernel (and rounding) than a batch of them: run it as
        # a batch of two so one sequence gets the same result alone as among others.
        out = decode_attention_reference(
            q.expand(2, -1, -1),
            k_cache,
            v_cache,
            block_tables.expand(2, -1),
            mask.expand(-1, 2, -1, -1),
            scale,
            softcap,
        )
        return out[:1]
    num_kv_heads = k_cache.shape[0]
    group = num_heads // num_kv_heads
    # The cache is head-major, so gathering blocks gives each (head, sequence) its context as one
    # contiguous [ctx, dim] matrix: [kv_heads, num_seqs, ctx, dim], no transposing copy.
    blocks = block_tables.flatten()
    k = k_cache.index_select(1, blocks).view(num_kv_heads, num_seqs, -1, head_dim)
    v = v_cache.index_select(1, blocks).view(num_kv_heads, num_seqs, -1, head_dim)
    # Query heads grouped under their kv head: [kv_heads, num_seqs, group, dim]
    qg = q.reshape(num_seqs, num_kv_heads, group, head_dim).transpose(0, 1).contiguous()
    # Scores in float32: bf16 scores would perturb the softmax weights by several percent.
    scores = torch.matmul(qg.float(), k.float().transpose(-1, -2)) * scale  # [.., group, ctx]
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask, float("-inf"))  # mask: [1, num_seqs, 1, ctx]
    probs = scores.softmax(dim=-1).to(q.dtype)
    out = torch.matmul(probs, v.to(q.dtype))  # [kv_heads, num_seqs, group, dim]
    return out.transpose(0, 1).reshape(num_seqs, num_heads * head_dim)


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    p: PrefillInputs,
    scale: float,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    """The C kernel (csrc/prefill_attention.c), where it can run; else the SDPA twin.

    q: [num_new, num_heads, head_dim] -> [num_new, num_heads * head_dim]
    """
    lib = _kernels_for(k_cache, v_cache, q)
    num_new, num_heads, head_dim = q.shape
    # The kernel checks for head_dim a multiple of 4 (64, 80, 128, ... in practice).
    shape_ok = head_dim % 4 == 0 and head_dim <= 256 and q.stride(1) == head_dim
    if lib is None or not shape_ok or q.stride(2) != 1:
        return prefill_attention_reference(q, k_cache, v_cache, p, scale, masking)
    num_kv_heads, num_blocks, block_size, _ = k_cache.shape
    out = q.new_empty(num_new, num_heads * head_dim)
    status = lib.paged_prefill_attention(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), p.block_table.data_ptr(),
        out.data_ptr(), num_new, p.context_len, num_heads, num_kv_heads, head_dim, block_size,
        num_blocks, q.stride(0), scale, masking.window, masking.softcap,
        q.dtype == torch.bfloat16, k_cache.dtype == torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"paged_prefill_attention failed ({status}) for q {tuple(q.shape)}")
    return out


def prefill_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    p: PrefillInputs,
    scale: float,
    masking: Masking = NO_MASKING,
) -> torch.Tensor:
    """The SDPA twin of `prefill_attention`: gathers the context and runs torch's kernel
    (with soft-capping, which SDPA cannot do, explicit float32 matmuls)."""
    num_new, num_heads, head_dim = q.shape
    # [kv_heads, num_blocks, block_size, dim] -> [1, kv_heads, context_len, dim]
    k = k_cache.index_select(1, p.block_table).flatten(1, 2)[:, : p.context_len].unsqueeze(0)
    v = v_cache.index_select(1, p.block_table).flatten(1, 2)[:, : p.context_len].unsqueeze(0)
    k, v = k.to(q.dtype), v.to(q.dtype)  # a bfloat16 cache of a float32 model: widened exactly
    # With no cached prefix, plain causal attention (SDPA skips the masked blocks, and gives
    # bitwise the rows the explicit mask would); after one, key position <= query position:
    # [1, 1, num_new, context_len] bool.
    mask = None
    if p.context_len > num_new or masking.window or masking.softcap:
        query_pos = torch.arange(p.context_len - num_new, p.context_len, device=q.device)
        keys = torch.arange(p.context_len, device=q.device)[None, :]
        mask = keys <= query_pos[:, None]
        if masking.window:
            mask &= keys > query_pos[:, None] - masking.window
        mask = mask[None, None]
    if masking.softcap:
        return _softcapped_attention(q, k[0], v[0], mask[0, 0], scale, masking.softcap)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),
        k,
        v,
        attn_mask=mask,
        is_causal=mask is None,
        scale=scale,
        enable_gqa=num_heads != k.shape[1],
    )  # [1, num_heads, num_new, head_dim]
    return out[0].transpose(0, 1).reshape(num_new, num_heads * head_dim)


def _softcapped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    softcap: float,
) -> torch.Tensor:
    # q: [num_new, heads, dim]; k, v: [kv_heads, context_len, dim]; mask: [num_new, context_len]
    num_new, num_heads, head_dim = q.shape
    group = num_heads // k.shape[0]
    k = k.repeat_interleave(group, dim=0).float()  # [heads, context_len, dim]
    v = v.repeat_interleave(group, dim=0).float()
    scores = torch.matmul(q.transpose(0, 1).float(), k.transpose(-1, -2)) * scale
    scores = softcap * torch.tanh(scores / softcap)  # [heads, num_new, context_len]
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    out = torch.matmul(probs, v).to(q.dtype)  # [heads, num_new, dim]
    return out.transpose(0, 1).reshape(num_new, num_heads * head_dim)
