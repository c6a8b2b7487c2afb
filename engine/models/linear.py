"""Linear layers of our models: float and weight-only quantized, all batch-invariant.

The model is built with `Linear` and loads its checkpoint into it; `quantize_linears` then swaps
each one for an int8 or int4 version, the way gpt-fast does, so the model code never changes.
Every row goes through compiled_kernels/linear.py's fixed-order kernel, except where the
runner asks for the library GEMM (`library_matmul`): then float layers send prompt tokens to it
in position-aligned tiles and the other rows in packed tiles where the library allows
(`linear_by_tiles`, `library_rows`). Every path keeps a row's result independent of the rest
of the batch.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import attrs
import torch
from torch import nn

from compiled_kernels.linear import (
    COLUMNS,
    GROUP,
    int4_linear,
    int8_linear,
    library_rows,
    linear,
    linear_by_tiles,
    quantize_int4,
    quantize_int8,
)

QUANTIZATIONS = ("none", "int8", "int4")


@attrs.frozen
class LibraryPlan:
    """Which rows of a step are prompt tokens, for compiled_kernels.linear_by_tiles."""

    num_rows: int  # rows in the step; an input of another row count is all packed rows
    chunks: tuple[tuple[int, int, int], ...]  # (start row, end row, first position)
    other_rows: torch.Tensor | None  # [n] int64 indices of the remaining rows, None if none


# For inputs whose rows have no positions (the LM head's): every row packed.
NO_POSITIONS = LibraryPlan(0, (), None)

# The plan while the runner has library matmuls on; a context variable because engines of
# different models step in different threads.
_plan: contextvars.ContextVar[LibraryPlan | None] = contextvars.ContextVar("library_plan")


@contextlib.contextmanager
def library_matmul(plan: LibraryPlan) -> Iterator[None]:
    token = _plan.set(plan)
    try:
        yield
    finally:
        _plan.reset(token)


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, in_features] -> [num_tokens, out_features]
        if torch.compiler.is_compiling():  # compiled graphs never take the library
            return linear(x, self.weight, self.bias)
        plan = _plan.get(None)
        if plan is None:
            return linear(x, self.weight, self.bias)
        if plan.num_rows == x.shape[0]:
            return linear_by_tiles(x, self.weight, self.bias, plan.chunks, plan.other_rows)
        return library_rows(x, self.weight, self.bias)


class Int8Linear(nn.Module):
    def __init__(self, source: Linear) -> None:
        super().__init__()
        self.out_features = source.weight.shape[0]
        q, scales = quantize_int8(source.weight.detach())
        self.register_buffer("q", q)  # [ceil(out / 8), ceil(in / 32), 256] int8
        self.register_buffer("scales", scales)  # [ceil(out / 8), ceil(in / 32), 8] float32
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.q, self.scales, self.out_features, self.bias)


class Int4Linear(nn.Module):
    def __init__(self, source: Linear) -> None:
        super().__init__()
        packed, scales, mins = quantize_int4(source.weight.detach())
        self.register_buffer("packed", packed)  # [out // 8, in // 32, 128] uint8
        self.register_buffer("scales", scales)  # [out // 8, in // 32, 8] float32
        self.register_buffer("mins", mins)  # [out // 8, in // 32, 8] float32
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int4_linear(x, self.packed, self.scales, self.mins, self.bias)


def quantize_linears(
    model: nn.Module,
    mode: str,
    int8_only: tuple[str, ...] = ("lm_head",),
    unquantized: tuple[str, ...] = ("router",),
) -> None:
    """Replace every `Linear` in `model` by its `mode` ("int8" or "int4") version, in place.

    Layers named in `int8_only` never go below int8: the vocabulary projection is the most
    sensitive (GGUF Q4 files keep the embedding at 8 bits for the same reason). Layers named in
    `unquantized` keep their weights: an MoE router is tiny, and its choice of experts flips on
    small errors.
    """
    assert mode in QUANTIZATIONS, mode
    if mode == "none":
        return
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Linear) or name in unquantized:
                continue
            out_features, in_features = child.weight.shape
            if (
                mode == "int4"
                and in_features % GROUP == 0
                and out_features % COLUMNS == 0
                and name not in int8_only
            ):
                setattr(parent, name, Int4Linear(child))
            else:  # int8, or int4 on a shape the packed kernel cannot group
                setattr(parent, name, Int8Linear(child))
