"""Qwen3: the Llama decoder with an RMS norm on each query and key head (q_norm, k_norm)
before the rotary embedding, and no bias on the projections."""

from __future__ import annotations

import torch
from torch import nn

from compiled_kernels.norm import rms_norm
from compiled_kernels.rotary import apply_rotary
from engine.models.llama import DecoderLayer, LlamaConfig, LlamaModel


class Qwen3DecoderLayer(DecoderLayer):
    def __init__(self, cfg: LlamaConfig, index: int) -> None:
        super().__init__(cfg, index)
        self.q_norm = nn.Parameter(torch.ones(cfg.head_dim))
        self.k_norm = nn.Parameter(torch.ones(cfg.head_dim))

    def rotated_qk(
        self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = qkv.shape[0], self.head_dim
        q_end, k_end = self.num_heads * d, (self.num_heads + self.num_kv_heads) * d
        # Each head is one row of the norm: [n * heads, head_dim]
        q = rms_norm(qkv[:, :q_end].reshape(-1, d), self.q_norm, self.eps)
        k = rms_norm(qkv[:, q_end:k_end].reshape(-1, d), self.k_norm, self.eps)
        q = apply_rotary(q.view(n, self.num_heads, d), *rope)
        k = apply_rotary(k.view(n, self.num_kv_heads, d), *rope)
        return q, k


class Qwen3Model(LlamaModel):
    layer_class = Qwen3DecoderLayer
