"""A checkpoint's rotary embedding: its inverse frequencies and the factor its cos and sin are
scaled by, for the plain rope and the scaled kinds checkpoints declare in `rope_scaling` /
`rope_parameters` (linear, llama3, yarn, longrope).

The scaled kinds are computed by transformers' own functions from the checkpoint's config, so
the tables match the reference implementation whatever spelling of the fields a config uses.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

# Kinds whose frequencies depend on the running sequence's length are not served: their
# tables would change under the keys already in the KV cache.
_UNSUPPORTED = ("dynamic",)


@attrs.frozen
class Rope:
    inv_freq: tuple[float, ...]  # [rotary_dim // 2]: rotary_dim may be less than head_dim
    attention_factor: float  # cos and sin are multiplied by it (yarn, longrope)

    @property
    def rotary_dim(self) -> int:
        return 2 * len(self.inv_freq)

    def cos_sin(self, max_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables indexed by position, in float32: cos, sin: [max_positions, rotary_dim // 2]."""
        inv_freq = torch.tensor(self.inv_freq, dtype=torch.float32)
        freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        return freqs.cos() * self.attention_factor, freqs.sin() * self.attention_factor


def rope_from_hf(raw: dict[str, Any], head_dim: int, layer_type: str | None = None) -> Rope:
    """The rope of a Hugging Face config.json's contents (of one layer type's, where the config
    gives each its own, as Gemma 3 does)."""
    params = _layer_params(raw.get("rope_parameters") or raw.get("rope_scaling") or {}, layer_type)
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "default":
        theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
        factor = params.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
        dim = int(head_dim * factor)
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return Rope(tuple((1.0 / theta**exponents).tolist()), 1.0)
    if kind in _UNSUPPORTED:
        raise ValueError(f"unsupported rope scaling {kind!r} ({params})")
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    fields = {k: v for k, v in raw.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(raw["model_type"], **fields)
    standard = _layer_params(config.rope_parameters, layer_type)
    kind = standard.get("rope_type", "default")
    if kind not in ROPE_INIT_FUNCTIONS or kind in _UNSUPPORTED:
        raise ValueError(f"unsupported rope scaling {kind!r} ({params})")
    # longrope has a short and a long set of factors; like vLLM, a model served past its
    # pretraining length uses the long set for every position, so cached keys never change.
    long = standard.get("original_max_position_embeddings", 0) < config.max_position_embeddings
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](
        config,
        None,
        seq_len=config.max_position_embeddings if long else None,
        layer_type=layer_type,
    )
    return Rope(tuple(inv_freq.tolist()), float(attention_factor))


def _layer_params(params: dict[str, Any], layer_type: str | None) -> dict[str, Any]:
    return params[layer_type] if layer_type is not None and layer_type in params else params
