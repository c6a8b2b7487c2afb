"""Qwen2: the Llama decoder with a bias on the q, k and v projections."""

from __future__ import annotations

from typing import Any

import attrs

from engine.models.llama import LlamaConfig, LlamaModel


@attrs.frozen
class Qwen2Config(LlamaConfig):
    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> Qwen2Config:
        return attrs.evolve(super().from_hf(raw), qkv_bias=True)


class Qwen2Model(LlamaModel):
    config_class = Qwen2Config
