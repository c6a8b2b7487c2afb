"""Qwen3-MoE: Qwen3's attention (per-head q/k norms) with a SparseMoe as the MLP of the layers
its config makes sparse (decoder_sparse_step, mlp_only_layers); the others stay dense."""

from __future__ import annotations

from engine.models.moe import MoeDecoderLayer, MoeModel
from engine.models.qwen3 import Qwen3DecoderLayer


class Qwen3MoeDecoderLayer(MoeDecoderLayer, Qwen3DecoderLayer):
    pass


class Qwen3MoeModel(MoeModel):
    layer_class = Qwen3MoeDecoderLayer
