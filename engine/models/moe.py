"""A sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE): a router scores every expert for every
token of the step at once, each token goes to its top-k experts, and each expert runs once per
step on the tokens routed to it.

Experts are ordinary `Linear` pairs, so int8/int4 quantization and the batch-invariant kernels
apply to them unchanged: a token's rows never depend on which other tokens share its expert,
and its k outputs are summed in expert order whatever the batch.
"""

from __future__ import annotations

import weakref
from typing import Any

import attrs
import torch
from torch import nn

from compiled_kernels.activation import silu_and_mul
from engine.models.linear import Linear
from engine.models.llama import DecoderLayer, LlamaConfig, LlamaModel


class Expert(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size)
        self.down_proj = Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [tokens routed here, hidden_size] -> same shape
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class SparseMoe(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        top_k: int,
        normalize_top_k: bool,
    ) -> None:
        super().__init__()
        self.router = Linear(hidden_size, num_experts)
        self.experts = nn.ModuleList(
            Expert(hidden_size, intermediate_size) for _ in range(num_experts)
        )
        self.key = len(_blocks)
        _blocks.append(weakref.ref(self))
        self.top_k = top_k
        # Whether the chosen experts' probabilities are rescaled to sum to one (Mixtral always;
        # Qwen3-MoE where its config says norm_topk_prob).
        self.normalize_top_k = normalize_top_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, hidden_size] -> [num_tokens, hidden_size]
        probs = self.router(x).float().softmax(dim=-1)  # [num_tokens, num_experts]
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [num_tokens, top_k] each
        if self.normalize_top_k:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return _experts(x, weights, chosen, self.key)


# Every SparseMoe, by its key: torch.compile sees the experts as one opaque op (as it sees
# attention), which finds its block's experts here. Weak references: a model freed (sleep
# mode) takes its blocks with it.
_blocks: list[weakref.ref[SparseMoe]] = []


def _experts(
    x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor, block: int
) -> torch.Tensor:
    # Eager callers skip the op's dispatch.
    if torch.compiler.is_compiling():
        return experts_op(x, weights, chosen, block)
    return _run_experts(x, weights, chosen, block)


def _run_experts(
    x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor, block: int
) -> torch.Tensor:
    """Runs each expert of SparseMoe `block` once, on the tokens routed to it. Which tokens
    those are is data: the loop reads their counts on the host.

    x: [n, hidden]; weights: [n, k] float32; chosen: [n, k] int64 -> [n, hidden]
    """
    experts = _blocks[block]().experts
    k = chosen.shape[1]
    pairs = chosen.flatten()  # [n * k]: the expert of each (token, slot) pair
    # The pairs grouped by expert; a stable sort keeps each expert's tokens in batch order.
    order = pairs.argsort(stable=True)
    token_of = order // k  # [n * k]: the token of each grouped pair
    counts = torch.bincount(pairs, minlength=len(experts)).tolist()
    outputs, start = [], 0
    for expert, count in zip(experts, counts, strict=True):
        if count:
            outputs.append(expert(x[token_of[start : start + count]]))
        start += count
    grouped = torch.cat(outputs)  # [n * k, hidden], pairs in expert order
    grouped = (grouped.float() * weights.flatten()[order, None]).to(x.dtype)
    # Each token's k outputs are added in expert order, whatever else is in the batch.
    return torch.zeros_like(x).index_add_(0, token_of, grouped)


experts_op = torch.library.custom_op("lumen::moe_experts", _run_experts, mutates_args=())


@experts_op.register_fake
def _(x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor, block: int) -> torch.Tensor:
    return torch.empty_like(x)


@attrs.frozen
class MoeConfig(LlamaConfig):
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0  # each expert's
    normalize_top_k: bool = True
    sparse_layers: tuple[int, ...] = ()  # the layers whose MLP is experts; the rest are dense

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> MoeConfig:
        """Mixtral's fields (num_local_experts; experts of intermediate_size, every layer
        sparse, always normalized) or Qwen3-MoE's (num_experts, moe_intermediate_size,
        norm_topk_prob, decoder_sparse_step, mlp_only_layers)."""
        dense = set(raw.get("mlp_only_layers") or ())
        step = raw.get("decoder_sparse_step") or 1
        layers = range(raw["num_hidden_layers"])
        return attrs.evolve(
            super().from_hf(raw),
            num_experts=raw.get("num_local_experts") or raw["num_experts"],
            num_experts_per_tok=raw["num_experts_per_tok"],
            moe_intermediate_size=raw.get("moe_intermediate_size") or raw["intermediate_size"],
            normalize_top_k=raw.get("norm_topk_prob", True),
            sparse_layers=tuple(i for i in layers if i not in dense and (i + 1) % step == 0),
        )


class MoeDecoderLayer(DecoderLayer):
    """A decoder layer whose MLP is a SparseMoe where the config makes it sparse."""

    def __init__(self, cfg: MoeConfig, index: int) -> None:
        super().__init__(cfg, index)
        self.sparse = index in cfg.sparse_layers
        if self.sparse:
            del self.gate_up_proj, self.down_proj
            self.moe = SparseMoe(
                cfg.hidden_size,
                cfg.moe_intermediate_size,
                cfg.num_experts,
                cfg.num_experts_per_tok,
                cfg.normalize_top_k,
            )

    def mlp(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.moe(hidden) if self.sparse else super().mlp(hidden)


# A checkpoint's expert projections by name (Mixtral's w1/w3/w2, Qwen3-MoE's): our projection
# and which half of the merged gate/up it fills.
_EXPERT_PROJECTIONS = {
    "w1": ("gate_up_proj", 0),
    "w3": ("gate_up_proj", 1),
    "w2": ("down_proj", None),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
    "down_proj": ("down_proj", None),
}


class MoeModel(LlamaModel):
    """Mixtral: the Llama decoder with a SparseMoe in every layer. Other MoE families bring
    their own layer class."""

    config_class = MoeConfig
    layer_class = MoeDecoderLayer
    cfg: MoeConfig

    def _our_name(
        self, hf_name: str, fused: dict[str, tuple[str, int]]
    ) -> tuple[str, int | None] | None:
        # layers.{i}.{mlp|block_sparse_moe}.gate.weight, or ...experts.{e}.{proj}.weight
        parts = hf_name.removeprefix("model.").split(".")
        if len(parts) >= 5 and parts[2] in ("mlp", "block_sparse_moe"):
            prefix = f"layers.{parts[1]}.moe"
            if parts[3] == "gate":
                return f"{prefix}.router.{parts[4]}", None
            if parts[3] == "experts":
                proj, shard = _EXPERT_PROJECTIONS[parts[5]]
                return f"{prefix}.experts.{parts[4]}.{proj}.{parts[6]}", shard
        return super()._our_name(hf_name, fused)

    def _shard_rows(self, target: str, shard: int) -> slice:
        if ".experts." in target:
            size = self.cfg.moe_intermediate_size
            return slice(shard * size, (shard + 1) * size)
        return super()._shard_rows(target, shard)
