"""What batch-invariant linear layers cost against the library GEMM, on this CPU.

    python benchmarks/linear_cost.py                   # 1, 4, 32, 256 rows
    python benchmarks/linear_cost.py --rows 1 64 512

For SmolLM2-135M's four layer shapes per transformer block (fused qkv, o, fused gate/up, down),
it times, summed over the four and at each row count:
- float32 and bfloat16: `F.linear` (the library, not batch-invariant), our fixed-order kernel
  (`linear`, every row under matmul = kernel) and, under matmul = library, the library in
  position-aligned tiles (`linear_by_tiles`, prompt tokens) and packed tiles (`library_rows`,
  generated tokens; the kernel where the library's rows depend on their offset);
- int8 and int4 with bf16 activations: our kernel against torch's packed weight-only kernels
  (what the layers ran before, not batch-invariant) and against `F.linear` on the bf16 weight.
Ratios are kernel time / library time: below 1 the invariant path is faster. Run nothing else
meanwhile; the CPU model and its vector flags head the output.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from compiled_kernels import native
from compiled_kernels.linear import (
    int4_linear,
    int8_linear,
    library_rows,
    linear,
    linear_by_tiles,
    quantize_int4,
    quantize_int8,
)

SHAPES = ((576, 960), (576, 576), (576, 3072), (1536, 576))  # (in, out) per block of SmolLM2
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description() -> str:
    name = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    flags = [f for f in VECTOR_FLAGS if f in native.cpu_flags()]
    return f"{name}; {', '.join(flags) or 'no AVX'}; {torch.get_num_threads()} threads"


def seconds(fn: Callable[[], torch.Tensor], min_time_s: float) -> float:
    """Best of several timed batches: the least disturbed by the rest of the machine."""
    fn()
    best, total, reps = float("inf"), 0.0, 1
    while total < min_time_s:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        elapsed = time.perf_counter() - start
        best, total = min(best, elapsed / reps), total + elapsed
        reps = min(reps * 2, 64)
    return best


def _packed_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's CPU int4 layout for the same Q4_1 grid (its zero point sits at level 8)."""
    out_features, in_features = weight.shape
    w = weight.float().view(out_features, in_features // 32, 32)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out_features, -1), 1)
    scales_zeros = torch.stack([scales, lo + 8 * scales], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_zeros.to(weight.dtype)


def measure(rows: list[int], min_time_s: float) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=gen) / i**0.5 for i, o in SHAPES]
    lines = [
        "| weights | rows | library GFLOP/s | kernel GFLOP/s | kernel / library "
        "| aligned tiles / library | packed tiles / library |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype in (torch.float32, torch.bfloat16):
        ws = [w.to(dtype) for w in weights]
        for m in rows:
            xs = [torch.randn(m, i, generator=gen).to(dtype) for i, _ in SHAPES]
            flops = sum(2 * m * i * o for i, o in SHAPES)
            t_lib = t_own = t_tiles = t_packed = 0.0
            for x, w in zip(xs, ws, strict=True):
                t_lib += seconds(lambda x=x, w=w: F.linear(x, w), min_time_s)
                t_own += seconds(lambda x=x, w=w: linear(x, w), min_time_s)
                chunk = ((0, m, 0),)
                t_tiles += seconds(
                    lambda x=x, w=w, chunk=chunk: linear_by_tiles(x, w, None, chunk, None),
                    min_time_s,
                )
                t_packed += seconds(lambda x=x, w=w: library_rows(x, w, None), min_time_s)
            name = "fp32" if dtype is torch.float32 else "bf16"
            lines.append(
                f"| {name} | {m} | {flops / t_lib / 1e9:.1f} | {flops / t_own / 1e9:.1f} "
                f"| {t_own / t_lib:.2f} | {t_tiles / t_lib:.2f} | {t_packed / t_lib:.2f} |"
            )
    lines += [
        "",
        "| weights (bf16 activations) | rows | kernel GFLOP/s | kernel / torch packed "
        "| kernel / F.linear bf16 |",
        "|---|---|---|---|---|",
    ]
    for mode in ("int8", "int4"):
        for m in rows:
            t_own = t_packed = t_lib = 0.0
            flops = sum(2 * m * i * o for i, o in SHAPES)
            for (i, _), w in zip(SHAPES, weights, strict=True):
                x = torch.randn(m, i, generator=gen).bfloat16()
                wb = w.bfloat16()
                t_lib += seconds(lambda x=x, wb=wb: F.linear(x, wb), min_time_s)
                if mode == "int8":
                    q, scales = quantize_int8(wb)
                    t_own += seconds(
                        lambda x=x, q=q, s=scales, o=wb.shape[0]: int8_linear(x, q, s, o),
                        min_time_s,
                    )
                    # torch's packed op takes one scale per output channel
                    s_channel = wb.float().abs().amax(dim=1) / 127
                    q_channel = torch.round(wb.float() / s_channel[:, None]).to(torch.int8)
                    s16 = s_channel.bfloat16()
                    t_packed += seconds(
                        lambda x=x, q=q_channel, s=s16: torch._weight_int8pack_mm(x, q, s),
                        min_time_s,
                    )
                else:
                    packed, scales, mins = quantize_int4(wb)
                    t_own += seconds(
                        lambda x=x, p=packed, s=scales, n=mins: int4_linear(x, p, s, n),
                        min_time_s,
                    )
                    tp, sz = _packed_int4(wb)
                    t_packed += seconds(
                        lambda x=x, p=tp, s=sz: torch._weight_int4pack_mm_for_cpu(x, p, 32, s),
                        min_time_s,
                    )
            lines.append(
                f"| {mode} | {m} | {flops / t_own / 1e9:.1f} | {t_own / t_packed:.2f} "
                f"| {t_own / t_lib:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 32, 256])
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    args = parser.parse_args()
    if native.load() is None:
        raise SystemExit("the C kernels are not built (no compiler?): nothing to compare")
    print(f"CPU: {cpu_description()}; kernels built for {native.isa_level() or 'this CPU'}\n")
    print("\n".join(measure(args.rows, args.min_time)))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
