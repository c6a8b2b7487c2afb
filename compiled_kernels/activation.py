"""The gated MLP activations: SiLU for the Llama family (C kernel in csrc/activation.c),
tanh-approximated GELU for Gemma (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compiled_kernels import native


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    # gate_up: [num_tokens, 2 * intermediate] -> [num_tokens, intermediate]
    lib = native.kernels_for(gate_up)
    if lib is None or not gate_up.is_contiguous():
        return silu_and_mul_reference(gate_up)
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = gate_up.new_empty(rows, width)
    lib.silu_and_mul(
        gate_up.data_ptr(), out.data_ptr(), rows, width, gate_up.dtype == torch.bfloat16,
        torch.get_num_threads(),
    )  # fmt: skip
    return out


def silu_and_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def gelu_tanh_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    # gate_up: [num_tokens, 2 * intermediate] -> [num_tokens, intermediate]
    gate, up = gate_up.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up
