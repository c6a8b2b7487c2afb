"""Granite: the Llama decoder with its four multipliers: the embeddings are scaled, each
sublayer's output is scaled before it joins the residual stream, attention scores are scaled
by attention_multiplier (instead of 1/sqrt(head_dim)), and the logits are divided by
logits_scaling."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from engine.models.llama import DecoderLayer, LlamaConfig, LlamaModel


@attrs.frozen
class GraniteConfig(LlamaConfig):
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    logits_scaling: float = 1.0

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> GraniteConfig:
        return attrs.evolve(
            super().from_hf(raw),
            embedding_multiplier=raw.get("embedding_multiplier", 1.0),
            residual_multiplier=raw.get("residual_multiplier", 1.0),
            attention_multiplier=raw.get("attention_multiplier", 1.0),
            logits_scaling=raw.get("logits_scaling", 1.0),
        )


class GraniteDecoderLayer(DecoderLayer):
    def __init__(self, cfg: GraniteConfig, index: int) -> None:
        super().__init__(cfg, index)
        self.attention_scale = cfg.attention_multiplier
        self.residual_multiplier = cfg.residual_multiplier


class GraniteModel(LlamaModel):
    config_class = GraniteConfig
    layer_class = GraniteDecoderLayer
    cfg: GraniteConfig

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids) * self.cfg.embedding_multiplier

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().compute_logits(hidden) / self.cfg.logits_scaling
