"""C kernels in compiled_kernels/csrc, built with the system C compiler on first use.

They exist to cut per-op overhead, which dominates this small model on the CPU: each replaces
several torch ops (and their dispatch and temporaries) with one call. Each has a torch twin
beside its Python wrapper, used under torch.compile, on the GPU, and as the tests' reference.

The library is built for an instruction-set level, not for the machine at hand (no
-march=native): on x86-64 the highest of x86-64-v4 with VNNI and AMX, -v4 with VNNI, -v4
(AVX-512), -v3 (AVX2 + FMA), -v2 and the baseline that the CPU's flags allow, chosen when the
library is loaded, so a build runs on every CPU of its level. LUMEN_KERNEL_ISA names a lower
level to use instead (the tests build each level the machine can run). The library is cached
under ~/.cache/lumen/kernels, keyed by the sources, the compiler and its flags, so later starts
load it at once. Without a compiler, or with LUMEN_NATIVE_KERNELS=0, `load()` returns None and
callers use their torch twins.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

logger = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
# -fno-trapping-math lets the compiler vectorise loops with a compare and select (the clamp in
# exp.h): under the default, a compare may raise a floating-point exception and so is not run
# speculatively. No value changes; the library never reads exception flags.
CFLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c11", "-fno-trapping-math")
# x86-64 levels, best first, with the CPU flags each needs (those of /proc/cpuinfo).
_V4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
X86_LEVELS = {
    # v4 with VNNI and AMX's int8 tiles (Intel since Sapphire Rapids): the quantized kernels'
    # many-row paths
    "x86-64-v4-amx": _V4 | {"avx512_vnni", "amx_tile", "amx_int8"},
    # v4 with AVX-512 VNNI (Intel since Ice Lake, AMD since Zen 4): one instruction per
    # 4-product integer dot in the quantized kernels
    "x86-64-v4-vnni": _V4 | {"avx512_vnni"},
    "x86-64-v4": _V4,
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"},
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    "x86-64": set(),
}
# The compiler options of the levels that are x86-64-v4 plus extensions (others: -march=LEVEL).
_V4_EXTENSIONS = {
    "x86-64-v4-amx": ("-mavx512vnni", "-mamx-tile", "-mamx-int8"),
    "x86-64-v4-vnni": ("-mavx512vnni",),
}
CACHE_DIR = Path.home() / ".cache" / "lumen" / "kernels"

_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
# Each function's C signature (pointers are tensors' data_ptr()); see the sources for layouts.
SIGNATURES = {
    "paged_decode_attention": (
        [_ptr] * 6  # q, k_cache, v_cache, block_tables, context_lens, out
        + [_i64] * 8  # num_seqs, num_heads, num_kv_heads, head_dim, block_size, num_blocks,
        # max_blocks, q_row_stride
        # scale, window, softcap, is_bf16, cache_bf16, num_threads
        + [_f32, _i64, _f32, _int, _int, _int],
        _int,
    ),
    "paged_prefill_attention": (
        [_ptr] * 5  # q, k_cache, v_cache, block_table, out
        + [_i64] * 8  # num_new, context_len, num_heads, num_kv_heads, head_dim, block_size,
        # num_blocks, q_row_stride
        # scale, window, softcap, is_bf16, cache_bf16, num_threads
        + [_f32, _i64, _f32, _int, _int, _int],
        _int,
    ),
    # logits, out, rows, vocab, threads
    "argmax_rows": ([_ptr, _ptr, _i64, _i64, _int], None),
    # calls (replay.c's KernelCall table), how many, rows
    "replay_calls": ([_ptr, _i64, _i64], _i64),
    # x, x_stride, w, bias, out, rows, in, out, kind, is_bf16, threads
    "linear": ([_ptr, _i64] + [_ptr] * 3 + [_i64] * 3 + [_int] * 3, _int),
    # x, x_stride, w, scales, bias, out, rows, in, out, is_bf16, threads
    "int8_linear": ([_ptr, _i64] + [_ptr] * 4 + [_i64] * 3 + [_int] * 2, _int),
    # x, x_stride, w, scales, mins, bias, out, rows, in, out, is_bf16, threads
    "int4_linear": ([_ptr, _i64] + [_ptr] * 5 + [_i64] * 3 + [_int] * 2, _int),
    # x, x_stride, residual, residual_out, weight, out, rows, hidden, eps, is_bf16, threads
    "rms_norm": ([_ptr, _i64, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _f32, _int, _int], None),
    # x, x_stride, cos, sin, out, tokens, heads, head_dim, is_bf16, threads
    "apply_rotary": ([_ptr, _i64, _ptr, _ptr, _ptr, _i64, _i64, _i64, _int, _int], None),
    # gate_up, out, rows, width, is_bf16, threads
    "silu_and_mul": ([_ptr, _ptr, _i64, _i64, _int, _int], None),
    # k, k_stride, v, v_stride, k_cache, v_cache, slot_mapping, tokens, kv_heads, head_dim,
    # num_slots, is_bf16, cache_bf16
    "write_kv": ([_ptr, _i64, _ptr, _i64, _ptr, _ptr, _ptr] + [_i64] * 4 + [_int] * 2, None),
}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def supported_levels() -> list[str]:
    """The instruction-set levels this CPU runs, best first ([""]: not x86-64, built plain)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return [""]
    flags = cpu_flags()
    return [level for level, needs in X86_LEVELS.items() if needs <= flags]


def isa_level() -> str:
    """The level the library is built for: the best this CPU runs, or LUMEN_KERNEL_ISA."""
    levels = supported_levels()
    wanted = os.environ.get("LUMEN_KERNEL_ISA", "")
    if wanted and wanted not in levels:
        raise ValueError(f"LUMEN_KERNEL_ISA={wanted!r}: this CPU runs {levels}")
    return wanted or levels[0]


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.c"))


def _cflags(level: str) -> tuple[str, ...]:
    if level in _V4_EXTENSIONS:
        return (*CFLAGS, "-march=x86-64-v4", *_V4_EXTENSIONS[level])
    return (*CFLAGS, f"-march={level}") if level else CFLAGS


def _library_path(compiler: str, level: str) -> Path:
    key = hashlib.sha256()
    for file in sorted(CSRC.iterdir()):
        key.update(file.name.encode() + file.read_bytes())
    for part in (" ".join(_cflags(level)), compiler):
        key.update(part.encode())
    return CACHE_DIR / f"lumen-kernels-{key.hexdigest()[:16]}.so"


def _build(compiler: str, level: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent starts never load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run(
            [compiler, *_cflags(level), *map(str, _sources()), "-o", str(built), "-lm"],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(built, target)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernels' library, or None when native kernels are off or cannot be built."""
    if os.environ.get("LUMEN_NATIVE_KERNELS", "1").lower() in ("0", "false", "no", "off"):
        return None
    return load_level(isa_level())


@functools.cache
def load_level(level: str) -> ctypes.CDLL | None:
    """The library built for one instruction-set level (which this CPU must run)."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        logger.warning("no C compiler found: the model runs on the torch reference kernels")
        return None
    path = _library_path(compiler, level)
    try:
        if not path.exists():
            logger.info("building %s for %s", path.name, level or platform.machine())
            _build(compiler, level, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        logger.warning("native kernels unavailable (%s): using the torch kernels", detail)
        return None
    for name, (argtypes, restype) in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def kernels_for(*tensors: torch.Tensor) -> ctypes.CDLL | Recorder | None:
    """The library when these tensors can go to the C kernels: on the CPU, all float32 or all
    bfloat16, in eager mode (torch.compile traces the torch twins instead). (The attention
    kernels ask separately for the KV cache, which may hold bfloat16 for a float32 model.)"""
    # Called several times per layer and step: plain loops, no generators.
    dtype = tensors[0].dtype
    if dtype is not torch.float32 and dtype is not torch.bfloat16:
        return None
    for t in tensors:
        if t.dtype is not dtype or not t.is_cpu:
            return None
    if torch.compiler.is_compiling():
        return None
    lib = load()
    recorder = _recorder.get()
    return lib if recorder is None or lib is None else recorder


def output_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor of t's shape and dtype for a kernel to write into.

    (empty_like costs about half of new_empty's dispatch, which adds up over 30 layers.)
    """
    return torch.empty_like(t, memory_format=torch.contiguous_format)


# Each function's argument that counts the rows (tokens, sequences) it works on. A recorded
# step (engine/cpu_graphs.py) replays on fewer rows by passing fewer: every kernel computes a
# row from that row alone, and buffers are row-major, so the first n rows are a prefix. In the
# order of replay.c's enum Kernel.
ROWS_ARGUMENT = {
    "linear": 5,
    "int8_linear": 6,
    "int4_linear": 7,
    "rms_norm": 6,
    "apply_rotary": 5,
    "silu_and_mul": 2,
    "write_kv": 7,
    "paged_decode_attention": 6,
}


@attrs.frozen
class KernelCall:
    name: str
    before: tuple  # the arguments before the row count
    after: tuple  # and after it


_MAX_ARGS = 20  # replay.c's MAX_ARGS: room for the longest signature (decode attention, 19)


class _Arg(ctypes.Union):
    _fields_ = [("i", ctypes.c_int64), ("p", ctypes.c_void_p), ("f", ctypes.c_float)]


class _KernelCall(ctypes.Structure):  # replay.c's KernelCall
    _fields_ = [("kernel", ctypes.c_int64), ("rows_at", ctypes.c_int64), ("args", _Arg * _MAX_ARGS)]


class Recorder:
    """Stands in for the library while a step is recorded: every kernel call runs, and is
    kept for replay with its row count made a parameter."""

    def __init__(self, lib: ctypes.CDLL, rows: int) -> None:
        self.lib, self.rows = lib, rows
        self.calls: list[KernelCall] = []
        self.unreplayable: list[str] = []  # calls with no row count, or another one

    def __getattr__(self, name: str) -> Callable[..., int | None]:
        function = getattr(self.lib, name)

        def record(*args: Any) -> int | None:
            at = ROWS_ARGUMENT.get(name)
            if at is None or args[at] != self.rows:
                rows = "?" if at is None else args[at]
                self.unreplayable.append(f"{name} on {rows} rows")
            else:
                self.calls.append(KernelCall(name, args[:at], args[at + 1 :]))
            return function(*args)

        return record


_recorder: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "kernel_recorder", default=None
)


@contextlib.contextmanager
def recording(rows: int) -> Iterator[Recorder | None]:
    """Within: `kernels_for` hands out a Recorder (None when there are no kernels)."""
    lib = load()
    recorder = None if lib is None else Recorder(lib, rows)
    token = _recorder.set(recorder)
    try:
        yield recorder
    finally:
        _recorder.reset(token)


class Replay:
    """Recorded calls as one C call (replay.c): the GIL is released once for the whole list,
    not taken back between its calls."""

    def __init__(self, lib: ctypes.CDLL, calls: list[KernelCall]) -> None:
        self.lib, self.calls = lib, calls
        self.table = (_KernelCall * len(calls))()
        kernels = list(ROWS_ARGUMENT)
        for entry, call in zip(self.table, calls, strict=True):
            entry.kernel, entry.rows_at = kernels.index(call.name), len(call.before)
            args = (*call.before, 0, *call.after)
            for k, (value, kind) in enumerate(zip(args, SIGNATURES[call.name][0], strict=True)):
                if kind is _f32:
                    entry.args[k].f = value
                elif kind is _ptr:
                    entry.args[k].p = value
                else:
                    entry.args[k].i = int(value)

    def __call__(self, rows: int) -> None:
        """The recorded calls again, on their first `rows` rows."""
        failed = self.lib.replay_calls(ctypes.addressof(self.table), len(self.calls), rows)
        if failed:
            name = self.calls[failed - 1].name
            raise RuntimeError(f"{name} failed in a replayed step of {rows} rows")
