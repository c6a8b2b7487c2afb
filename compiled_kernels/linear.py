"""Linear layers whose per-row results do not depend on how many rows are in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_ROWS = 4


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [num_tokens, in_features] -> [num_tokens, out_features]
    # CPU BLAS libraries send very small batches (1 row in oneDNN bf16; 1-3 rows in MKL fp32)
    # through kernels that round differently from the GEMM used for larger ones, so a request
    # would decode differently alone than in a batch. Running at least MIN_ROWS rows keeps every
    # row's result independent of the batch size; at these sizes a linear layer is bound by
    # reading the weight, so the extra rows cost next to nothing.
    # (cuBLAS has no such small-batch path worth the extra kernels: the GPU skips the padding.)
    num_rows = x.shape[0]
    if num_rows < MIN_ROWS and x.is_cpu:
        padded = torch.cat([x, x.new_zeros(MIN_ROWS - num_rows, x.shape[1])])
        return F.linear(padded, weight, bias)[:num_rows]
    return F.linear(x, weight, bias)
