"""The C kernels of a git revision against the working tree's: time and bits, side by side.

    python benchmarks/kernel_ab.py                     # HEAD against the working tree
    python benchmarks/kernel_ab.py --base f79eff7 --kernels silu_and_mul rms_norm

Both trees of compiled_kernels/csrc are built the way the server builds them (this CPU's
level, native._cflags) into a temporary folder and loaded side by side, so one process times
both, alternating, on the same inputs at SmolLM2-135M's shapes (the decode rows of 1 and 32
sequences and a 512-token prefill). Each line gives the best of several batches for each tree,
the ratio (working tree / base: below 1 the change is faster), and whether every output bit is
the same. Run nothing else meanwhile; the CPU heads the output.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.linear_cost import cpu_description  # noqa: E402
from compiled_kernels import native  # noqa: E402
from compiled_kernels.linear import quantize_int4  # noqa: E402

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 576, 1536, 9, 3, 64  # SmolLM2-135M
ROWS = (1, 32, 512)
THREADS = torch.get_num_threads()


def build(csrc: Path, out: Path) -> ctypes.CDLL:
    level = native.isa_level()
    sources = sorted(map(str, csrc.glob("*.c")))
    subprocess.run(["cc", *native._cflags(level), *sources, "-o", str(out), "-lm"], check=True)
    lib = ctypes.CDLL(str(out))
    for name, (argtypes, restype) in native.SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def base_tree(revision: str, into: Path) -> Path:
    """compiled_kernels/csrc as it is at `revision`, extracted into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "compiled_kernels/csrc"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "compiled_kernels" / "csrc"


@dataclasses.dataclass
class Case:
    """One call of a library function, on inputs made once and kept for both trees."""

    name: str
    kernel: str  # the function in the library
    args: tuple  # its arguments, tensors passed by address
    outputs: tuple[torch.Tensor, ...]  # what it writes, compared bit for bit

    def __post_init__(self) -> None:
        self.raw = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in self.args)

    def run(self, lib: ctypes.CDLL) -> None:
        getattr(lib, self.kernel)(*self.raw)

    def result(self, lib: ctypes.CDLL) -> torch.Tensor:
        """Its outputs' bytes after a run."""
        self.run(lib)
        return torch.cat([out.reshape(-1).view(torch.uint8) for out in self.outputs])


def silu_cases(dtype: torch.dtype) -> list[Case]:
    cases = []
    for rows in ROWS:
        gate_up = torch.randn(rows, 2 * INTERMEDIATE).to(dtype) * 4
        out = torch.empty(rows, INTERMEDIATE, dtype=dtype)
        args = (gate_up, out, rows, INTERMEDIATE, dtype is torch.bfloat16, THREADS)
        cases.append(Case(f"silu_and_mul {rows} x {INTERMEDIATE}", "silu_and_mul", args, (out,)))
    return cases


def norm_cases(dtype: torch.dtype) -> list[Case]:
    cases = []
    for rows in ROWS:
        x, residual = torch.randn(rows, HIDDEN).to(dtype), torch.randn(rows, HIDDEN).to(dtype)
        weight, out = torch.randn(HIDDEN).to(dtype), torch.empty(rows, HIDDEN, dtype=dtype)
        summed = torch.empty_like(out)
        args = (x, HIDDEN, residual, summed, weight, out, rows, HIDDEN, 1e-5,
                dtype is torch.bfloat16, THREADS)  # fmt: skip
        name = f"rms_norm (+ residual) {rows} x {HIDDEN}"
        cases.append(Case(name, "rms_norm", args, (out, summed)))
    return cases


def int4_cases(dtype: torch.dtype) -> list[Case]:
    cases = []
    for in_features, out_features in ((HIDDEN, 2 * INTERMEDIATE), (INTERMEDIATE, HIDDEN)):
        packed, scales, mins = quantize_int4(torch.randn(out_features, in_features) * 0.05)
        for rows in ROWS:
            x = torch.randn(rows, in_features).to(dtype)
            out = torch.empty(rows, out_features, dtype=dtype)
            args = (x, in_features, packed, scales, mins, None, out, rows, in_features,
                    out_features, dtype is torch.bfloat16, THREADS)  # fmt: skip
            name = f"int4_linear {rows} x {in_features} -> {out_features}"
            cases.append(Case(name, "int4_linear", args, (out,)))
    return cases


def attention_cases(dtype: torch.dtype) -> list[Case]:
    cases, block_size = [], 16
    for seqs, context in ((1, 200), (32, 200), (1, 3300)):
        blocks = seqs * -(-context // block_size)
        k_cache = torch.randn(KV_HEADS, blocks, block_size, HEAD_DIM).bfloat16()
        v_cache = torch.randn(KV_HEADS, blocks, block_size, HEAD_DIM).bfloat16()
        tables = torch.randperm(blocks).view(seqs, -1).contiguous()
        lens = torch.full((seqs,), context, dtype=torch.int64)
        q = torch.randn(seqs, HEADS, HEAD_DIM).to(dtype)
        out = torch.empty(seqs, HEADS * HEAD_DIM, dtype=dtype)
        args = (q, k_cache, v_cache, tables, lens, out, seqs, HEADS, KV_HEADS, HEAD_DIM,
                block_size, blocks, tables.shape[1], HEADS * HEAD_DIM, HEAD_DIM**-0.5, 0, 0.0,
                dtype is torch.bfloat16, 1, THREADS)  # fmt: skip
        name = f"paged_decode_attention {seqs} x {context} (bf16 cache)"
        cases.append(Case(name, "paged_decode_attention", args, (out,)))
    return cases


KERNELS = {
    "silu_and_mul": silu_cases,
    "rms_norm": norm_cases,
    "int4_linear": int4_cases,
    "paged_decode_attention": attention_cases,
}


def best_seconds(run: Callable[[], None], min_time_s: float) -> float:
    best, total = float("inf"), 0.0
    while total < min_time_s:
        start = time.perf_counter()
        for _ in range(5):
            run()
        elapsed = time.perf_counter() - start
        best, total = min(best, elapsed / 5), total + elapsed
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--kernels", nargs="+", choices=sorted(KERNELS), default=sorted(KERNELS))
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"),
                        default=["float32", "bfloat16"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two trees")
    args = parser.parse_args()
    print(f"# {cpu_description()}; level {native.isa_level()}; base {args.base}")
    with tempfile.TemporaryDirectory() as tmp:
        base = build(base_tree(args.base, Path(tmp)), Path(tmp) / "base.so")
        work = build(REPO_ROOT / "compiled_kernels" / "csrc", Path(tmp) / "work.so")
        torch.manual_seed(0)
        for kernel in args.kernels:
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                for case in KERNELS[kernel](dtype):
                    same = torch.equal(case.result(base), case.result(work))
                    times = {"base": float("inf"), "work": float("inf")}
                    for _ in range(args.rounds):
                        for label, lib in (("base", base), ("work", work)):
                            seconds = best_seconds(functools.partial(case.run, lib), 0.05)
                            times[label] = min(times[label], seconds)
                    base_us, work_us = times["base"] * 1e6, times["work"] * 1e6
                    print(
                        f"{case.name:48s} {dtype_name:8s} base {base_us:9.1f} us  work "
                        f"{work_us:9.1f} us  {work_us / base_us:.2f}x  "
                        f"{'same bits' if same else 'BITS DIFFER'}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
