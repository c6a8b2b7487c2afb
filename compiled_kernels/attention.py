"""Paged attention over a block-structured KV cache.

One function serves prefill, chunked prefill and decode: every sequence in the batch has some
new query tokens (1 for decode) that attend to all of its cached tokens up to their own position.
Queries are padded per sequence to the longest query in the batch; keys are gathered from the
sequence's blocks. The caller builds the index tensors once per step (AttentionInputs) and every
layer reuses them.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F


@attrs.frozen
class AttentionInputs:
    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int64 (unused entries: 0)
    query_index: torch.Tensor  # [num_seqs, max_query_len] int64: flat token index (padding: 0)
    output_index: torch.Tensor  # [num_tokens] int64: row of each token in [num_seqs * max_query_len]
    mask: torch.Tensor  # [num_seqs, 1, max_query_len, max_blocks * block_size] bool: may attend


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    # k, v: [num_tokens, num_kv_heads, head_dim]; caches: [num_blocks, block_size, kv_heads, dim]
    k_cache.view(-1, *k.shape[1:]).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, *v.shape[1:]).index_copy_(0, slot_mapping, v)


def paged_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, inputs: AttentionInputs,
    scale: float,
) -> torch.Tensor:
    # q: [num_tokens, num_heads, head_dim] -> [num_tokens, num_heads * head_dim]
    num_seqs, max_query_len = inputs.query_index.shape
    num_heads, head_dim = q.shape[1:]
    num_kv_heads = k_cache.shape[2]
    qp = q[inputs.query_index].transpose(1, 2)  # [num_seqs, num_heads, max_query_len, head_dim]
    # [num_seqs, max_blocks, block_size, kv_heads, dim] -> [num_seqs, kv_heads, ctx_len, dim]
    k = k_cache[inputs.block_tables].flatten(1, 2).transpose(1, 2)
    v = v_cache[inputs.block_tables].flatten(1, 2).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        qp, k, v, attn_mask=inputs.mask, scale=scale, enable_gqa=num_heads != num_kv_heads
    )  # [num_seqs, num_heads, max_query_len, head_dim]
    out = out.transpose(1, 2).reshape(num_seqs * max_query_len, num_heads * head_dim)
    return out[inputs.output_index]
