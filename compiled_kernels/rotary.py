"""Rotary position embeddings (the HF "rotate half" layout); C kernel in csrc/rotary.c."""

from __future__ import annotations

import torch

from compiled_kernels import native


def rope_cos_sin(
    head_dim: int, max_positions: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables indexed by position, built once in float32.

    cos, sin: [max_positions, head_dim // 2]
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return freqs.cos(), freqs.sin()


def rotary_for_positions(
    positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The table rows for this step's tokens, once for all layers: [num_tokens, 1, dim // 2]."""
    return cos[positions].unsqueeze(1).to(dtype), sin[positions].unsqueeze(1).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [num_tokens, num_heads, head_dim] (heads contiguous, tokens may be strided);
    # cos, sin: [num_tokens, 1, rotary_dim // 2] contiguous -> [num_tokens, num_heads, head_dim]
    rotary_dim = 2 * cos.shape[-1]
    if rotary_dim < x.shape[-1]:  # partial rotary: the rest of each head passes through
        rotated = apply_rotary_reference(x[..., :rotary_dim], cos, sin)
        return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)
    lib = native.kernels_for(x, cos, sin)
    heads, head_dim = x.shape[1:]
    if lib is None or x.stride(2) != 1 or x.stride(1) != head_dim or not cos.is_contiguous():
        return apply_rotary_reference(x, cos, sin)
    out = native.output_like(x)
    lib.apply_rotary(
        x.data_ptr(), x.stride(0), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), x.shape[0],
        heads, head_dim, x.dtype == torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    return out


def apply_rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
