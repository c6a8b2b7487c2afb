"""This CPU's bf16 matmul peak at the model's linear shapes, and how close decoding gets to it.

    python benchmarks/gemm_peak.py                       # peak per shape
    python benchmarks/gemm_peak.py --decode-tok-s 900    # + the fraction that decode reaches

For each linear layer of SmolLM2-135M (fused qkv, o, fused gate/up, down, LM head) it times
`F.linear` in bf16 with 2048 rows, large enough for the GEMM to run at its best, and reports
GFLOP/s. The peak is the best of those shapes. Decoding N tokens/s runs 2 * (linear weights)
FLOPs per token in those same shapes (attention adds ~1-2% at these contexts, not counted), so
`decode GFLOP/s / peak` is the fraction of the measured matmul peak that decode reaches.
compare.py calls `measure()` and reports it for lumen at 32 streams.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

# (name, in_features, out_features, times per token) for SmolLM2-135M: 30 layers + LM head.
SHAPES = (
    ("qkv_proj", 576, 960, 30),
    ("o_proj", 576, 576, 30),
    ("gate_up_proj", 576, 3072, 30),
    ("down_proj", 1536, 576, 30),
    ("lm_head", 576, 49152, 1),
)
ROWS = 2048


def flops_per_token() -> int:
    return sum(2 * i * o * n for _, i, o, n in SHAPES)


def _gflops(in_features: int, out_features: int, rows: int, min_time_s: float) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=gen).bfloat16()
    w = torch.randn(out_features, in_features, generator=gen).bfloat16()
    F.linear(x, w)  # warm-up
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time_s:
        F.linear(x, w)
        runs += 1
    return 2 * rows * in_features * out_features * runs / elapsed / 1e9


def measure(min_time_s: float = 1.0) -> dict[str, float]:
    """GFLOP/s per shape (name -> value) and "peak", the best of them."""
    with torch.inference_mode():
        result = {name: _gflops(i, o, ROWS, min_time_s) for name, i, o, _ in SHAPES}
    result["peak"] = max(result.values())
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--decode-tok-s", type=float, help="decode output tokens/s to put against it")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per shape")
    args = p.parse_args()
    result = measure(args.min_time)
    print(f"bf16 F.linear, {ROWS} rows, {torch.get_num_threads()} threads:")
    for name, value in result.items():
        print(f"  {name:14s} {value:8.1f} GFLOP/s")
    print(f"model: {flops_per_token() / 1e6:.0f} MFLOP of linear layers per token")
    if args.decode_tok_s:
        achieved = args.decode_tok_s * flops_per_token() / 1e9
        print(
            f"decode at {args.decode_tok_s:.0f} tok/s: {achieved:.1f} GFLOP/s = "
            f"{achieved / result['peak']:.0%} of the peak"
        )


if __name__ == "__main__":
    main()
