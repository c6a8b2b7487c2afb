"""Gemma 3 (the text model): Gemma 2's layer with a (1 + weight) RMS norm on each query and key
head, no soft-capping, and two rotary embeddings: the sliding-window (local) layers use their own
base (and no scaling), the global layers theirs. Layers are five local to one global unless the
config lists `layer_types`."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from compiled_kernels.rotary import rotary_for_positions
from engine.models.gemma2 import Gemma2Config, Gemma2DecoderLayer, Gemma2Model
from engine.models.qwen3 import Qwen3DecoderLayer
from engine.models.rope import Rope, rope_from_hf


@attrs.frozen
class Gemma3Config(Gemma2Config):
    local_rope: Rope | None = None  # the sliding-window layers'

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> Gemma3Config:
        raw = _rope_per_layer_type(raw)
        cfg = super().from_hf(raw)
        return attrs.evolve(
            cfg,
            rope=rope_from_hf(raw, cfg.head_dim, "full_attention"),
            local_rope=rope_from_hf(raw, cfg.head_dim, "sliding_attention"),
        )

    @staticmethod
    def default_layer_types(raw: dict[str, Any]) -> list[str]:
        pattern = raw.get("sliding_window_pattern") or 6
        layers = range(raw["num_hidden_layers"])
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in layers]


def _rope_per_layer_type(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with one rope per layer type, as transformers writes Gemma 3's; configs as
    published give the global layers rope_theta (and rope_scaling), the local ones
    rope_local_base_freq."""
    if "sliding_attention" in (raw.get("rope_parameters") or {}):
        return raw
    scaling = raw.get("rope_scaling") or raw.get("rope_parameters") or {}
    full = {"rope_type": "default", **scaling, "rope_theta": raw.get("rope_theta", 1e6)}
    local = {"rope_type": "default", "rope_theta": raw.get("rope_local_base_freq", 1e4)}
    per_type = {"full_attention": full, "sliding_attention": local}
    return {**raw, "rope_parameters": per_type, "rope_scaling": None}


class Gemma3DecoderLayer(Gemma2DecoderLayer, Qwen3DecoderLayer):
    """Gemma 2's forward, Qwen3's per-head q/k norms (loaded as 1 + weight like every norm)."""


class Gemma3Model(Gemma2Model):
    config_class = Gemma3Config
    layer_class = Gemma3DecoderLayer
    cfg: Gemma3Config

    def init_derived_state(self) -> None:
        super().init_derived_state()
        cos, sin = self.cfg.local_rope.cos_sin(self.cfg.max_position_embeddings)
        device = self.embed_tokens.weight.device
        self.register_buffer("local_rope_cos", cos.to(device), persistent=False)
        self.register_buffer("local_rope_sin", sin.to(device), persistent=False)

    def layer_ropes(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rope = rotary_for_positions(positions, self.rope_cos, self.rope_sin, dtype)
        local = rotary_for_positions(positions, self.local_rope_cos, self.local_rope_sin, dtype)
        return [local if layer.window else rope for layer in self.layers]
