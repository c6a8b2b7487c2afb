"""Our Llama-family decoder (Llama, SmolLM, Mistral, Phi-3; qwen2.py adds Qwen2's qkv bias,
qwen3.py Qwen3's per-head q/k norms, granite.py Granite's multipliers, olmo2.py OLMo 2's
post-norms). Scaled and partial rotary embeddings come from the checkpoint's config (rope.py).

It reads HF checkpoints (safetensors) and runs on flat token batches: every forward takes the
new tokens of all scheduled sequences concatenated, their positions, and the paged KV cache.
q/k/v and gate/up projections are merged into one matmul each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import safe_open
from torch import nn

from compiled_kernels.activation import silu_and_mul
from compiled_kernels.norm import add_rms_norm, rms_norm
from compiled_kernels.rotary import apply_rotary, rotary_for_positions
from engine.models.attention import attention
from engine.models.linear import Linear
from engine.models.rope import Rope, rope_from_hf


@attrs.frozen
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: Rope
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    # Per layer, the sliding window its queries look back over (their own token included);
    # 0: the whole context.
    layer_windows: tuple[int, ...] = ()

    @property
    def kv_window(self) -> int:
        """The window past which no layer looks, so that older KV blocks can be given back;
        0 when some layer sees the whole context."""
        windows = self.layer_windows
        return max(windows) if windows and all(windows) else 0

    @classmethod
    def from_dir(cls, model_dir: Path) -> LlamaConfig:
        return cls.from_hf(json.loads((model_dir / "config.json").read_text()))

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> LlamaConfig:
        """From a Hugging Face config.json's contents."""
        heads = raw["num_attention_heads"]
        head_dim = raw.get("head_dim") or raw["hidden_size"] // heads
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope=rope_from_hf(raw, head_dim),
            max_position_embeddings=raw.get("max_position_embeddings", 2048),
            tie_word_embeddings=raw.get("tie_word_embeddings", False),
            qkv_bias=raw.get("attention_bias", False),
            layer_windows=_layer_windows(raw),
        )


def _layer_windows(raw: dict[str, Any]) -> tuple[int, ...]:
    """Each layer's sliding window: a config's `layer_types` names the sliding layers (as
    transformers writes Qwen2's, Gemma's); without them `sliding_window` applies to every layer
    (Mistral, Phi-3, Mixtral) unless `use_sliding_window` is false (Qwen2 as published), and
    Qwen2's `max_window_layers` keeps the layers below it full."""
    window = raw.get("sliding_window") or 0
    layers = range(raw["num_hidden_layers"])
    if raw.get("layer_types"):
        return tuple(window if t == "sliding_attention" else 0 for t in raw["layer_types"])
    if raw.get("use_sliding_window") is False:
        return tuple(0 for _ in layers)
    first_sliding = raw.get("max_window_layers", 0) if "use_sliding_window" in raw else 0
    return tuple(window if i >= first_sliding else 0 for i in layers)


# A layer's own norms, by their names in HF checkpoints (post_feedforward_layernorm: OLMo 2,
# Gemma 2; pre_feedforward_layernorm: Gemma 2).
_LAYER_NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)


def _num_shards(param_name: str) -> int:
    """How many checkpoint tensors a parameter is merged from (q, k, v; gate, up)."""
    return 3 if ".qkv_proj." in param_name else 2 if ".gate_up_proj." in param_name else 1


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, index: int) -> None:
        super().__init__()
        self.index = index  # picks this layer's KV cache
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.eps = cfg.rms_norm_eps
        qkv_out = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, qkv_out, bias=cfg.qkv_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, cfg.hidden_size)
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size)
        self.input_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.post_attention_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.attention_scale = self.head_dim**-0.5
        self.window = cfg.layer_windows[index] if cfg.layer_windows else 0
        self.softcap = 0.0  # attention scores as they are (Gemma 2 caps them)
        # What each sublayer's output is scaled by before it joins the residual (Granite's).
        self.residual_multiplier = 1.0

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden, residual: [num_tokens, hidden_size]
        if residual is None:
            residual = hidden
            hidden = rms_norm(hidden, self.input_layernorm, self.eps)
        else:
            hidden, residual = add_rms_norm(hidden, residual, self.input_layernorm, self.eps)
        hidden = self._scaled(self.self_attention(hidden, rope))
        hidden, residual = add_rms_norm(hidden, residual, self.post_attention_layernorm, self.eps)
        hidden = self._scaled(self.mlp(hidden))
        return hidden, residual

    def self_attention(
        self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        # hidden: [n, hidden_size], normed -> [n, hidden_size], after o_proj
        n = hidden.shape[0]
        qkv = self.qkv_proj(hidden)  # [n, (heads + 2 * kv_heads) * head_dim]
        q, k = self.rotated_qk(qkv, rope)
        qk_heads = self.num_heads + self.num_kv_heads
        v = qkv[:, qk_heads * self.head_dim :].view(n, self.num_kv_heads, self.head_dim)
        out = attention(q, k, v, self.index, self.attention_scale, self.window, self.softcap)
        return self.o_proj(out)

    def mlp(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [n, hidden_size] -> [n, hidden_size]; a mixture of experts in MoE families
        return self.down_proj(silu_and_mul(self.gate_up_proj(hidden)))

    def _scaled(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.residual_multiplier == 1.0 else out * self.residual_multiplier

    def rotated_qk(
        self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and key heads of qkv, rotated: [n, heads, head_dim], [n, kv_heads,
        head_dim]."""
        n, qk_heads = qkv.shape[0], self.num_heads + self.num_kv_heads
        # q and k heads rotate together in one call: [n, heads + kv_heads, head_dim]
        qk = apply_rotary(qkv[:, : qk_heads * self.head_dim].view(n, qk_heads, -1), *rope)
        q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
        return q, k


class LlamaModel(nn.Module):
    config_class = LlamaConfig  # what reads this family's config.json
    layer_class = DecoderLayer  # a family with its own attention or MLP brings its own

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(self.layer_class(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)
        self.init_derived_state()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        # input_ids, positions: [num_tokens] -> hidden: [num_tokens, hidden_size]
        # Attention reads the step's metadata and KV cache from `attention_context`.
        hidden = self.embed(input_ids)
        return self.decoder_layers(hidden, self.layer_ropes(positions, hidden.dtype))

    def decoder_layers(
        self, hidden: torch.Tensor, ropes: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """The layers and the final norm: [num_tokens, hidden_size] embedded tokens and each
        layer's rotary rows (`layer_ropes`) -> [num_tokens, hidden_size]."""
        residual = None
        for layer, rope in zip(self.layers, ropes, strict=True):
            hidden, residual = layer(hidden, residual, rope)
        if residual is None:  # a family whose layers keep the stream in `hidden` (OLMo 2)
            return rms_norm(hidden, self.norm, self.cfg.rms_norm_eps)
        hidden, _ = add_rms_norm(hidden, residual, self.norm, self.cfg.rms_norm_eps)
        return hidden

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [num_tokens] -> [num_tokens, hidden_size]
        return self.embed_tokens(input_ids)

    def layer_ropes(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's rotary table rows for this step's tokens, looked up once: the same for
        every layer here (Gemma 3's local and global layers have their own)."""
        rope = rotary_for_positions(positions, self.rope_cos, self.rope_sin, dtype)
        return [rope] * len(self.layers)

    def init_derived_state(self) -> None:
        """What is not loaded from a checkpoint: the tied LM head and the rope tables.

        Called at construction and again after anything that re-creates parameters and
        buffers, such as `to_empty` on a model built on the meta device.
        """
        cfg = self.cfg
        if cfg.tie_word_embeddings:
            # One parameter, loaded once; quantization gives the head its own packed copy.
            self.lm_head.weight = self.embed_tokens.weight
        device = self.embed_tokens.weight.device
        # Built for real (never on the meta device) and in float32 whatever the model dtype.
        cos, sin = cfg.rope.cos_sin(cfg.max_position_embeddings)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [num_seqs, hidden_size] -> logits: [num_seqs, vocab_size] in float32
        return self.lm_head(hidden).float()

    @torch.no_grad()
    def load_weights(self, model_dir: Path) -> None:
        """Copy HF tensors in, merging q/k/v and gate/up into the fused projections."""
        params = dict(self.named_parameters())
        fused = {
            "q_proj": ("qkv_proj", 0),
            "k_proj": ("qkv_proj", 1),
            "v_proj": ("qkv_proj", 2),
            "gate_proj": ("gate_up_proj", 0),
            "up_proj": ("gate_up_proj", 1),
        }
        loaded: set[str] = set()
        for file in sorted(model_dir.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for hf_name in f.keys():
                    tensor = f.get_tensor(hf_name)
                    name = self._our_name(hf_name, fused)
                    if name is None:
                        continue
                    target, shard = name
                    param = params[target]
                    if shard is None:  # a whole tensor, fused already in some (Phi-3)
                        param.copy_(tensor)
                        loaded.update(f"{target}:{s}" for s in range(_num_shards(target)))
                    else:
                        param[self._shard_rows(target, shard)].copy_(tensor)
                        loaded.add(f"{target}:{shard}")
        expected = sum(_num_shards(n) for n in params)
        if len(loaded) != expected:
            raise ValueError(f"{model_dir} is missing tensors: loaded {len(loaded)} of {expected}")

    def _our_name(
        self, hf_name: str, fused: dict[str, tuple[str, int]]
    ) -> tuple[str, int | None] | None:
        name = hf_name.removeprefix("model.")
        if name.endswith("rotary_emb.inv_freq"):
            return None
        if name == "lm_head.weight":
            return None if self.cfg.tie_word_embeddings else ("lm_head.weight", None)
        if name == "norm.weight":
            return "norm", None
        parts = name.split(".")  # layers.{i}.{self_attn|mlp}.{proj}.{weight|bias}
        if parts[0] == "layers":
            prefix = f"layers.{parts[1]}"
            if parts[2] in _LAYER_NORMS:
                return f"{prefix}.{parts[2]}", None
            proj, kind = parts[3], parts[4]
            if proj in ("q_norm", "k_norm"):  # Qwen3's per-head norms
                return f"{prefix}.{proj}", None
            if proj in fused:
                target, shard = fused[proj]
                return f"{prefix}.{target}.{kind}", shard
            return f"{prefix}.{proj}.{kind}", None
        return name, None

    def _shard_rows(self, target: str, shard: int) -> slice:
        cfg = self.cfg
        if "qkv_proj" in target:
            q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
            starts = (0, q, q + kv, q + 2 * kv)
            return slice(starts[shard], starts[shard + 1])
        i = cfg.intermediate_size
        return slice(shard * i, (shard + 1) * i)
