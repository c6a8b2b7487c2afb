"""Linear layers whose per-row results do not depend on the batch, by construction.

CPU BLAS libraries pick their kernels, blocking and reduction order from the shape of the call
(and on some CPUs from more: MKL's fp32 GEMM rounds rows 5-7 of a 4-row panel differently,
oneDNN sends bf16 to AMX tiles only past a row count), so a row computed alone and the same row
among 31 others can differ in the last bit, and greedy decoding then diverges. Instead of
guessing the libraries' thresholds, every CPU linear layer here runs the C kernel in
csrc/linear.c, whose per-output arithmetic is fixed: the same sum in the same order for a row,
whatever the number of rows, its position or the threads, on every CPU with FMA.

Weights are float32, bfloat16, int8 per output channel (`quantize_int8`) or int4 in groups of
32 inputs (`quantize_int4`, the GGUF Q4_1 scheme). Activations and outputs keep x's dtype; sums
are float32. torch.compile sees the kernel as one opaque op. On the GPU or without a C compiler
the torch twins run instead (`F.linear` on the dequantized weight): the same results within
rounding, without the invariance guarantee.

Where the CPU multiplies bfloat16 natively (AVX-512 BF16, AMX), oneDNN's GEMM is several times
faster than this float32-FMA kernel on many rows, so a model may send rows there instead, always
in calls of TILE_ROWS rows so that the library sees one shape whatever the step holds. Library
GEMMs compute each output row from its own input row only; what they vary with is the call's
shape and, on some CPUs, a row's offset in the call (tail rows of a register block), so:
- prompt tokens go in position-aligned tiles (`linear_by_tiles`): position p always sits at row
  p % TILE_ROWS of its call, which fixes the offset too, with no assumption about the library;
- other rows (generated tokens, the LM head's rows) are packed densely into tiles, but only
  where a probe shows the library's rows do not depend on their offset at that shape
  (`library_rows_are_offset_free`); elsewhere they take the kernel.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from compiled_kernels import native

logger = logging.getLogger(__name__)

WEIGHT_F32, WEIGHT_BF16, WEIGHT_INT8, WEIGHT_INT4 = range(4)
INT4_GROUP = 32  # inputs per int4 scale and minimum
# Rows per library call in linear_by_tiles: enough for AMX/oneDNN to run at full speed, few
# enough that a short prompt's padding costs little.
TILE_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [num_tokens, in_features], weight: [out_features, in_features] -> [num_tokens, out]
    kind = WEIGHT_BF16 if weight.dtype is torch.bfloat16 else WEIGHT_F32
    if weight.dtype is not x.dtype:
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, weight, None, None, bias, kind)
    lib = _kernels(x, weight, bias)
    if lib is None:
        return F.linear(x, weight, bias)
    return _run(lib, x, weight, None, None, bias, kind)


def linear_by_tiles(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    chunks: tuple[tuple[int, int, int], ...],
    other_rows: torch.Tensor | None,
) -> torch.Tensor:
    """The library GEMM for prompt tokens, in tiles of TILE_ROWS rows aligned to positions.

    chunks: (start, end, first_position): rows [start, end) of x are one sequence's tokens at
    positions first_position onwards. Position p always lands on row p % TILE_ROWS of the
    tile holding positions p // TILE_ROWS * TILE_ROWS onwards (other rows zero), so whatever
    the step holds and however the scheduler cut the prompt, its row reaches the library in
    the same call shape, at the same offset. other_rows (indices, or None when there are none)
    go through `library_rows`.
    """
    # x: [num_tokens, in] -> [num_tokens, out]
    out = x.new_empty(x.shape[0], weight.shape[0])
    tile = x.new_empty(TILE_ROWS, x.shape[1])
    for start, end, first_position in chunks:
        row, position = start, first_position
        while row < end:
            offset = position % TILE_ROWS
            n = min(end - row, TILE_ROWS - offset)
            tile.zero_()
            tile[offset : offset + n] = x[row : row + n]
            out[row : row + n] = F.linear(tile, weight, bias)[offset : offset + n]
            row, position = row + n, position + n
    if other_rows is not None:
        out[other_rows] = library_rows(x[other_rows], weight, bias)
    return out


def library_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Rows with no position to align to, through the library packed TILE_ROWS to a call
    (zero-padded) where its rows are offset-free at this shape, else through `linear`."""
    # x: [num_rows, in] -> [num_rows, out]
    if not library_rows_are_offset_free(weight, bias):
        return linear(x, weight, bias)
    num_rows = x.shape[0]
    padded = x.new_zeros(-(-num_rows // TILE_ROWS) * TILE_ROWS, x.shape[1])
    padded[:num_rows] = x
    tiles = [F.linear(tile, weight, bias) for tile in padded.split(TILE_ROWS)]
    return torch.cat(tiles)[:num_rows]


_offset_free: dict[tuple, bool] = {}


def library_rows_are_offset_free(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: int = TILE_ROWS
) -> bool:
    """Whether a library call of `rows` rows at this shape gives a row the same bits at every
    offset. Probed once per shape: rotating the rows of one tile by one place moves every row
    to its neighbouring offset, so any offset that computes differently from its neighbour (a
    tail block, a thread boundary) changes some output bits."""
    key = (
        rows, tuple(weight.shape), weight.dtype, weight.device.type,
        None if bias is None else bias.dtype, torch.get_num_threads(),
    )  # fmt: skip
    if key not in _offset_free:
        gen = torch.Generator().manual_seed(0)
        tile = torch.randn(rows, weight.shape[1], generator=gen).to(weight)
        reference = F.linear(tile, weight, bias)
        _offset_free[key] = all(
            torch.equal(F.linear(tile.roll(shift, 0), weight, bias), reference.roll(shift, 0))
            for shift in (1, rows // 2)
        )
        logger.info(
            "library GEMM %s x %s %s: rows %s their offset in a %d-row call",
            weight.shape[1], weight.shape[0], weight.dtype,
            "do not depend on" if _offset_free[key] else "depend on", rows,
        )  # fmt: skip
    return _offset_free[key]


def int8_linear(
    x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    # x: [num_tokens, in], q: [out, in] int8, scales: [out] float32 -> [num_tokens, out]
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, q, scales, None, bias, WEIGHT_INT8)
    lib = _kernels(x, q, bias)
    if lib is None:
        return F.linear(x, (q.float() * scales[:, None]).to(x.dtype), bias)
    return _run(lib, x, q, scales, None, bias, WEIGHT_INT8)


def int4_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    # x: [num_tokens, in], packed: [out, in // 2] uint8, scales, mins: [out, in // 32] float32
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, packed, scales, mins, bias, WEIGHT_INT4)
    lib = _kernels(x, packed, bias)
    if lib is None:
        return F.linear(x, dequantize_int4(packed, scales, mins).to(x.dtype), bias)
    return _run(lib, x, packed, scales, mins, bias, WEIGHT_INT4)


def _kernels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The C library when these tensors can go to the linear kernel."""
    if x.dim() != 2 or x.stride(1) != 1 or not weight.is_contiguous():
        return None
    if bias is not None and (bias.dtype is not x.dtype or not bias.is_contiguous()):
        return None
    return native.kernels_for(x)


def _run(lib, x, weight, scales, mins, bias, kind: int) -> torch.Tensor:
    rows, in_features = x.shape
    out = x.new_empty(rows, weight.shape[0])
    status = lib.linear(
        x.data_ptr(), x.stride(0), weight.data_ptr(),
        None if scales is None else scales.data_ptr(), None if mins is None else mins.data_ptr(),
        None if bias is None else bias.data_ptr(), out.data_ptr(), rows, in_features,
        weight.shape[0], kind, x.dtype is torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("linear: could not allocate the float32 rows")
    return out


def _linear_op_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor | None,
    mins: torch.Tensor | None,
    bias: torch.Tensor | None,
    kind: int,
) -> torch.Tensor:
    lib = native.load()
    if lib is None:
        raise RuntimeError("lumen::linear needs the C kernels")
    return _run(lib, x.contiguous(), weight, scales, mins, bias, kind)


# The kernel as one opaque op for torch.compile (eager callers skip the op's dispatch).
linear_op = torch.library.custom_op("lumen::linear", _linear_op_impl, mutates_args=())


@linear_op.register_fake
def _(x, weight, scales, mins, bias, kind):
    return x.new_empty(x.shape[0], weight.shape[0])


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8. weight: [out, in] -> (int8 [out, in], scales [out])."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scales


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of 32 inputs (the GGUF Q4_1 scheme): w ~ q * scale + min.

    weight: [out, in] (in % 32 == 0) -> (packed [out, in // 2] uint8, scales, mins [out, in // 32])
    Each 16 inputs take 8 bytes: inputs 0-7 in the low nibbles, 8-15 in the high ones.
    """
    out_features, in_features = weight.shape
    w = weight.float().view(out_features, in_features // INT4_GROUP, INT4_GROUP)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    halves = q.view(out_features, in_features // 16, 2, 8)  # [out, chunks of 16, low/high, 8]
    packed = halves[:, :, 0] | (halves[:, :, 1] << 4)
    return packed.reshape(out_features, in_features // 2).contiguous(), scales, lo


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """The float32 weights [out, in] that quantize_int4's output stands for."""
    out_features = packed.shape[0]
    chunks = packed.view(out_features, -1, 8)  # [out, chunks of 16 inputs, 8 bytes]
    q = torch.stack([chunks & 15, chunks >> 4], dim=2).view(out_features, -1, INT4_GROUP)
    return (q.float() * scales[..., None] + mins[..., None]).view(out_features, -1)
