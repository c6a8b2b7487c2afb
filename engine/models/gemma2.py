"""Gemma 2: the Llama decoder with Gemma's changes.

- Embeddings are scaled by sqrt(hidden_size) (rounded to the model's dtype, as Gemma does).
- Norms multiply by (1 + weight): the checkpoint's weights are loaded plus one, so the Llama
  RMS norm kernels serve unchanged.
- Each sublayer's input and output are normed (four norms a layer); the residual stream stays
  in `hidden`.
- The MLP's gate uses tanh-approximated GELU; attention is scaled by query_pre_attn_scalar.
- Attention scores and the final logits are soft-capped (cap * tanh(x / cap)).
- Layers alternate sliding-window and global attention (`layer_types`; checkpoints written
  before transformers recorded them alternate from a sliding first layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from compiled_kernels.activation import gelu_tanh_and_mul
from compiled_kernels.norm import rms_norm
from engine.models.llama import DecoderLayer, LlamaConfig, LlamaModel


@attrs.frozen
class Gemma2Config(LlamaConfig):
    attention_softcap: float = 0.0  # 0: none
    final_softcap: float = 0.0
    query_pre_attn_scalar: float = 1.0

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> Gemma2Config:
        raw = {**raw, "layer_types": raw.get("layer_types") or cls.default_layer_types(raw)}
        base = super().from_hf(raw)
        return attrs.evolve(
            base,
            attention_softcap=raw.get("attn_logit_softcapping") or 0.0,
            final_softcap=raw.get("final_logit_softcapping") or 0.0,
            query_pre_attn_scalar=raw.get("query_pre_attn_scalar") or base.head_dim,
        )

    @staticmethod
    def default_layer_types(raw: dict[str, Any]) -> list[str]:
        layers = range(raw["num_hidden_layers"])
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in layers]


class Gemma2DecoderLayer(DecoderLayer):
    def __init__(self, cfg: Gemma2Config, index: int) -> None:
        super().__init__(cfg, index)
        self.pre_feedforward_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.post_feedforward_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.attention_scale = cfg.query_pre_attn_scalar**-0.5
        self.softcap = cfg.attention_softcap

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, None]:
        # hidden: [num_tokens, hidden_size], the residual stream itself
        out = self.self_attention(rms_norm(hidden, self.input_layernorm, self.eps), rope)
        hidden = hidden + rms_norm(out, self.post_attention_layernorm, self.eps)
        out = self.mlp(rms_norm(hidden, self.pre_feedforward_layernorm, self.eps))
        return hidden + rms_norm(out, self.post_feedforward_layernorm, self.eps), None

    def mlp(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gelu_tanh_and_mul(self.gate_up_proj(hidden)))


class Gemma2Model(LlamaModel):
    config_class = Gemma2Config
    layer_class = Gemma2DecoderLayer
    cfg: Gemma2Config

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        return hidden * torch.tensor(self.cfg.hidden_size**0.5, dtype=hidden.dtype)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().compute_logits(hidden)
        cap = self.cfg.final_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    @torch.no_grad()
    def load_weights(self, model_dir: Path) -> None:
        super().load_weights(model_dir)
        for name, param in self.named_parameters():
            if name.endswith("norm"):  # Gemma's norms scale by (1 + weight)
                param.add_(1.0)
