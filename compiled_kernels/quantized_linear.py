"""Weight-only quantized linear layers: int8 per output channel, int4 per group of inputs.

At small batches a linear layer is bound by reading its weight, so 1- or 4-bit-per-value
halves or quarters the bytes read per token. Activations stay in bf16/fp32; torch's packed
kernels dequantize on the fly. Both kernels give each row the same result whatever the batch
size, so quantized serving stays batch-invariant.
"""

from __future__ import annotations

import torch


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8. weight: [out, in] -> (int8 [out, in], scales [out])."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scales.to(weight.dtype)


def int8_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    # x: [num_tokens, in] -> [num_tokens, out]
    # torch.* bindings: the torch.ops.aten.* route costs ~5 us more per call in Python.
    return torch._weight_int8pack_mm(x, q, scales)


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of `group_size` inputs (the GGUF Q4_1 scheme).

    weight: [out, in] -> (packed weight, scales_and_zeros: [in // group_size, out, 2])
    """
    out_features, in_features = weight.shape
    w = weight.float().view(out_features, in_features // group_size, group_size)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
    # torch's kernel computes (q - 8) * scale + zero, so the zero point sits at level 8.
    zeros = lo + 8 * scales
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out_features, -1), 1)
    scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_and_zeros.to(weight.dtype)


def int4_linear(
    x: torch.Tensor, packed: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor
) -> torch.Tensor:
    # x: [num_tokens, in] -> [num_tokens, out]
    return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
