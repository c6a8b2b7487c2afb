"""RMSNorm (+ the residual add), computed in float32 like the HF reference, returned in the
input dtype. The C kernel (csrc/norm.c) and its torch twin round alike."""

from __future__ import annotations

import torch

from compiled_kernels import native


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [num_tokens, hidden] (rows may be strided); weight: [hidden]
    lib = native.kernels_for(x, weight)
    if lib is None or x.stride(-1) != 1:
        return rms_norm_reference(x, weight, eps)
    out = native.output_like(x)
    rows, hidden = x.shape
    lib.rms_norm(
        x.data_ptr(), x.stride(0), None, None, weight.data_ptr(), out.data_ptr(), rows, hidden,
        eps, x.dtype == torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    return out


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rms_norm(x + residual), x + residual): the new residual stream and its norm."""
    lib = native.kernels_for(x, residual, weight)
    if lib is None or x.stride(-1) != 1 or not residual.is_contiguous():
        return add_rms_norm_reference(x, residual, weight, eps)
    out, summed = native.output_like(x), native.output_like(x)
    rows, hidden = x.shape
    lib.rms_norm(
        x.data_ptr(), x.stride(0), residual.data_ptr(), summed.data_ptr(), weight.data_ptr(),
        out.data_ptr(), rows, hidden, eps, x.dtype == torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    return out, summed


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm_reference(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    summed = x + residual
    return rms_norm_reference(summed, weight, eps), summed
