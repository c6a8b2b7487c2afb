"""OLMo 2: the Llama decoder with its norms after each sublayer instead of before (the
residual stream adds the normed output of attention, then of the MLP) and an RMS norm over
the whole query and key projections before the rotary embedding."""

from __future__ import annotations

import torch
from torch import nn

from compiled_kernels.norm import rms_norm
from compiled_kernels.rotary import apply_rotary
from engine.models.llama import DecoderLayer, LlamaConfig, LlamaModel


class Olmo2DecoderLayer(DecoderLayer):
    def __init__(self, cfg: LlamaConfig, index: int) -> None:
        super().__init__(cfg, index)
        del self.input_layernorm  # no norm before the sublayers
        self.post_feedforward_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.q_norm = nn.Parameter(torch.ones(cfg.num_attention_heads * cfg.head_dim))
        self.k_norm = nn.Parameter(torch.ones(cfg.num_key_value_heads * cfg.head_dim))

    def rotated_qk(
        self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = qkv.shape[0], self.head_dim
        q_end, k_end = self.num_heads * d, (self.num_heads + self.num_kv_heads) * d
        q = rms_norm(qkv[:, :q_end], self.q_norm, self.eps)  # [n, heads * head_dim]
        k = rms_norm(qkv[:, q_end:k_end], self.k_norm, self.eps)
        q = apply_rotary(q.view(n, self.num_heads, d), *rope)
        k = apply_rotary(k.view(n, self.num_kv_heads, d), *rope)
        return q, k

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # hidden: [num_tokens, hidden_size], the residual stream itself (residual stays None)
        out = self.self_attention(hidden, rope)
        hidden = hidden + rms_norm(out, self.post_attention_layernorm, self.eps)
        out = self.mlp(hidden)
        hidden = hidden + rms_norm(out, self.post_feedforward_layernorm, self.eps)
        return hidden, None


class Olmo2Model(LlamaModel):
    layer_class = Olmo2DecoderLayer
