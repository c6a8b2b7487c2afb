"""Linear layers of our models: plain (batch-invariant) and weight-only quantized.

The model is built with `Linear` and loads its checkpoint into it; `quantize_linears` then swaps
each one for an int8 or int4 version, the way gpt-fast does, so the model code never changes.
"""

from __future__ import annotations

import torch
from torch import nn

from compiled_kernels.linear import linear
from compiled_kernels.quantized_linear import int4_linear, int8_linear, quantize_int4, quantize_int8

QUANTIZATIONS = ("none", "int8", "int4")
INT4_GROUP_SIZE = 32  # GGUF Q4_1's block size


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, in_features] -> [num_tokens, out_features]
        return linear(x, self.weight, self.bias)


class Int8Linear(nn.Module):
    def __init__(self, source: Linear) -> None:
        super().__init__()
        q, scales = quantize_int8(source.weight.detach())
        self.register_buffer("q", q)  # [out, in] int8
        self.register_buffer("scales", scales)  # [out]
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = int8_linear(x, self.q, self.scales)
        return y if self.bias is None else y + self.bias


class Int4Linear(nn.Module):
    def __init__(self, source: Linear, group_size: int = INT4_GROUP_SIZE) -> None:
        super().__init__()
        self.group_size = group_size
        packed, scales_and_zeros = quantize_int4(source.weight.detach(), group_size)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in // group, out, 2]
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = int4_linear(x, self.packed, self.group_size, self.scales_and_zeros)
        return y if self.bias is None else y + self.bias


def quantize_linears(
    model: nn.Module, mode: str, int8_only: tuple[str, ...] = ("lm_head",)
) -> None:
    """Replace every `Linear` in `model` by its `mode` ("int8" or "int4") version, in place.

    Layers named in `int8_only` never go below int8: the vocabulary projection is the most
    sensitive (GGUF Q4 files keep the embedding at 8 bits for the same reason).
    """
    assert mode in QUANTIZATIONS, mode
    if mode == "none":
        return
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Linear):
                continue
            in_features = child.weight.shape[1]
            if mode == "int4" and in_features % INT4_GROUP_SIZE == 0 and name not in int8_only:
                setattr(parent, name, Int4Linear(child))
            else:  # int8, or int4 on a shape the packed kernel cannot group
                setattr(parent, name, Int8Linear(child))
