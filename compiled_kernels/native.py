"""C kernels in compiled_kernels/csrc, built with the system C compiler on first use.

The shared library is cached under ~/.cache/lumen/kernels, keyed by the source, the compiler
flags and the CPU's instruction-set flags (it is built with -march=native), so later starts
load it at once. Without a compiler, or with LUMEN_NATIVE_KERNELS=0, `load()` returns None and
callers use their torch twins.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_attention.c"
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
CACHE_DIR = Path.home() / ".cache" / "lumen" / "kernels"

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
DECODE_ATTENTION_ARGS = (
    [_ptr] * 6  # q, k_cache, v_cache, block_tables, context_lens, out
    + [_i64] * 8  # num_seqs, num_heads, num_kv_heads, head_dim, block_size, num_blocks,
    # max_blocks, q_row_stride
    + [ctypes.c_float, ctypes.c_int, ctypes.c_int]  # scale, is_bf16, num_threads
)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _library_path(compiler: str) -> Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS).encode(), compiler.encode()):
        key.update(part)
    key.update(_cpu_flags().encode())
    return CACHE_DIR / f"{SOURCE.stem}-{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent starts never load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run(
            [compiler, *CFLAGS, str(SOURCE), "-o", str(built), "-lm"],
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
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        logger.warning("no C compiler found: attention runs on the torch reference kernels")
        return None
    path = _library_path(compiler)
    try:
        if not path.exists():
            logger.info("building %s", path.name)
            _build(compiler, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        logger.warning("native kernels unavailable (%s): using the torch kernels", detail)
        return None
    lib.paged_decode_attention.argtypes = DECODE_ATTENTION_ARGS
    lib.paged_decode_attention.restype = ctypes.c_int
    return lib
