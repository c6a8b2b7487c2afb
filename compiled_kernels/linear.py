"""Linear layers whose per-row results do not depend on the batch, by construction.

CPU BLAS libraries pick their kernels, blocking and reduction order from the shape of the call
(and on some CPUs from more: MKL's fp32 GEMM rounds rows 5-7 of a 4-row panel differently,
oneDNN sends bf16 to AMX tiles only past a row count), so a row computed alone and the same row
among 31 others can differ in the last bit, and greedy decoding then diverges. Instead of
guessing the libraries' thresholds, every CPU linear layer here runs the C kernel in
csrc/linear.c, whose per-output arithmetic is fixed: the same sum in the same order for a row,
whatever the number of rows, its position or the threads, on every CPU with FMA.

Weights are float32, bfloat16, int8 (`quantize_int8`, the GGUF Q8_0 scheme) or int4
(`quantize_int4`, the GGUF Q4_1 scheme), both with a scale per 32 inputs. Activations and
outputs keep x's dtype; sums are float32. The quantized layers have their own kernels
(csrc/int8_linear.c, csrc/int4_linear.c): they quantize each row's activations per 32 inputs
(`quantize_activations`: to 16 bits for int8 weights, to 8 bits, GGUF's Q8, for int4) and sum
the products in integers, exactly, which reads a quarter (int8) or an eighth (int4) of the
float32 weights' bytes, cuts the float work, and is still a function of the row alone.
torch.compile sees the kernels as one opaque op. On the GPU or without a C compiler the torch
twins run instead (`F.linear` on the dequantized weight, for int8 and int4 on the quantized
activations): the same results within rounding, without the invariance guarantee.

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
GROUP = 32  # inputs per quantization scale (and int4 minimum), weights and activations alike
COLUMNS = 8  # output columns interleaved in the quantized layouts
# Activations are quantized per group to -L..L: 8 bits for int4 weights (GGUF's Q8), 16 bits for
# int8 weights (the LM head's, whose outputs 8 bits would blur)
INT4_ACTIVATION_LEVELS, INT8_ACTIVATION_LEVELS = 127, 32767
# Rows per library call in linear_by_tiles: enough for AMX/oneDNN to run at full speed, few
# enough that a short prompt's padding costs little.
TILE_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # x: [num_tokens, in_features], weight: [out_features, in_features] -> [num_tokens, out]
    kind = WEIGHT_BF16 if weight.dtype is torch.bfloat16 else WEIGHT_F32
    if weight.dtype is not x.dtype:
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, weight, None, None, bias, kind, weight.shape[0])
    lib = _kernels(x, weight, bias)
    if lib is None:
        return F.linear(x, weight, bias)
    return _run(lib, x, weight, None, None, bias, kind, weight.shape[0])


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
    x: torch.Tensor,
    q: torch.Tensor,
    scales: torch.Tensor,
    out_features: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    # x: [num_tokens, in], q: [ceil(out / 8), ceil(in / 32), 256] int8,
    # scales: [ceil(out / 8), ceil(in / 32), 8] float32 (quantize_int8's layout)
    # -> [num_tokens, out_features]
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, q, scales, None, bias, WEIGHT_INT8, out_features)
    lib = _kernels(x, q, bias)
    if lib is None:
        weight = dequantize_int8(q, scales)[:out_features, : x.shape[1]]
        return _twin(x, weight, bias, INT8_ACTIVATION_LEVELS)
    return _run(lib, x, q, scales, None, bias, WEIGHT_INT8, out_features)


def int4_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    # x: [num_tokens, in], packed: [out // 8, in // 32, 128] uint8,
    # scales, mins: [out // 8, in // 32, 8] float32 (quantize_int4's layout)
    if torch.compiler.is_compiling() and x.is_cpu:
        return linear_op(x, packed, scales, mins, bias, WEIGHT_INT4, packed.shape[0] * COLUMNS)
    lib = _kernels(x, packed, bias)
    if lib is None:
        return _twin(x, dequantize_int4(packed, scales, mins), bias, INT4_ACTIVATION_LEVELS)
    return _run(lib, x, packed, scales, mins, bias, WEIGHT_INT4, packed.shape[0] * COLUMNS)


def _twin(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, levels: int
) -> torch.Tensor:
    """A quantized kernel's torch twin: the quantized activations times the dequantized weight."""
    y = F.linear(quantize_activations(x.float(), levels), weight)
    return (y if bias is None else y + bias.float()).to(x.dtype)


def quantize_activations(x: torch.Tensor, levels: int = INT4_ACTIVATION_LEVELS) -> torch.Tensor:
    """x as the quantized kernels multiply it: each row's groups of 32 inputs (the last one
    zero-padded) rounded to 2 * levels + 1 levels, step = max|x| / levels (for the int4
    kernel's 127, GGUF's Q8 scheme), returned as float32 level * step."""
    # x: [num_tokens, in] float32 -> [num_tokens, in] float32
    in_features = x.shape[1]
    padded = F.pad(x, (0, -in_features % GROUP))
    groups = padded.view(x.shape[0], -1, GROUP)
    amax = groups.abs().amax(dim=-1, keepdim=True)
    # Divisions by full tensors: torch computes `127 / t` and `t / 127` through reciprocals,
    # which round differently from the kernel's divisions.
    levels_max = torch.full_like(amax, float(levels))
    inverse = torch.where(amax > 0, levels_max / amax, torch.zeros_like(amax))
    rounded = torch.round(groups * inverse)
    return (rounded * (amax / levels_max)).view_as(padded)[:, :in_features]


def _kernels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The C library when these tensors can go to the linear kernel."""
    if x.dim() != 2 or x.stride(1) != 1 or not weight.is_contiguous():
        return None
    if bias is not None and (bias.dtype is not x.dtype or not bias.is_contiguous()):
        return None
    return native.kernels_for(x)


def _run(lib, x, weight, scales, mins, bias, kind: int, out_features: int) -> torch.Tensor:
    rows, in_features = x.shape
    out = x.new_empty(rows, out_features)
    bias_ptr = None if bias is None else bias.data_ptr()
    is_bf16 = x.dtype is torch.bfloat16
    if kind == WEIGHT_INT4:
        status = lib.int4_linear(
            x.data_ptr(), x.stride(0), weight.data_ptr(), scales.data_ptr(), mins.data_ptr(),
            bias_ptr, out.data_ptr(), rows, in_features, out_features, is_bf16,
            torch.get_num_threads(),
        )  # fmt: skip
    elif kind == WEIGHT_INT8:
        status = lib.int8_linear(
            x.data_ptr(), x.stride(0), weight.data_ptr(), scales.data_ptr(), bias_ptr,
            out.data_ptr(), rows, in_features, out_features, is_bf16, torch.get_num_threads(),
        )  # fmt: skip
    else:
        status = lib.linear(
            x.data_ptr(), x.stride(0), weight.data_ptr(), bias_ptr, out.data_ptr(), rows,
            in_features, out_features, kind, is_bf16, torch.get_num_threads(),
        )  # fmt: skip
    if status != 0:
        raise MemoryError("linear: could not allocate its rows' working copy")
    return out


def _linear_op_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor | None,
    mins: torch.Tensor | None,
    bias: torch.Tensor | None,
    kind: int,
    out_features: int,
) -> torch.Tensor:
    lib = native.load()
    if lib is None:
        raise RuntimeError("lumen::linear needs the C kernels")
    return _run(lib, x.contiguous(), weight, scales, mins, bias, kind, out_features)


# The kernel as one opaque op for torch.compile (eager callers skip the op's dispatch).
linear_op = torch.library.custom_op("lumen::linear", _linear_op_impl, mutates_args=())


@linear_op.register_fake
def _(x, weight, scales, mins, bias, kind, out_features):
    return x.new_empty(x.shape[0], out_features)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per group of 32 inputs (the GGUF Q8_0 scheme): w ~ level * scale, level in
    -127..127, laid out for csrc/int8_linear.c: columns in blocks of COLUMNS, and for each
    block and group 256 bytes, sixteen 16-byte vectors m whose bytes 2c, 2c + 1 are column c's
    levels of the group's inputs 2m, 2m + 1. Columns and inputs are zero-padded to whole
    blocks and groups.

    weight: [out, in] -> (levels [ceil(out / 8), ceil(in / 32), 256] int8,
    scales [ceil(out / 8), ceil(in / 32), 8] float32)
    """
    out_features, in_features = weight.shape
    w = F.pad(weight.float(), (0, -in_features % GROUP, 0, -out_features % COLUMNS))
    blocks, groups = w.shape[0] // COLUMNS, w.shape[1] // GROUP
    w = w.view(w.shape[0], groups, GROUP)
    scales = w.abs().amax(dim=-1) / 127  # [out, groups]; 0 for an all-zero group
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    levels = torch.round(w / safe[..., None]).clamp(-127, 127).to(torch.int8)
    # [block, column c, group, vector m, input t] -> [block, group, m, c, t]
    levels = levels.view(blocks, COLUMNS, groups, 16, 2).permute(0, 2, 3, 1, 4)
    return levels.reshape(blocks, groups, 256).contiguous(), _by_column_block(scales)


def dequantize_int8(levels: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 weights [out, in] that quantize_int8's output stands for, padding included."""
    blocks, groups, _ = levels.shape
    by_column = levels.view(blocks, groups, 16, COLUMNS, 2).permute(0, 3, 1, 2, 4).float()
    weight = by_column.reshape(blocks, COLUMNS, groups, GROUP) * scales.transpose(1, 2)[..., None]
    return weight.reshape(blocks * COLUMNS, groups * GROUP)


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of 32 inputs (the GGUF Q4_1 scheme): w ~ level * scale + min,
    level in 0..15, laid out for csrc/int4_linear.c: columns in blocks of COLUMNS, and for
    each block and group 128 bytes, four 32-byte vectors m whose bytes 4c .. 4c + 3 belong to
    column c: low nibbles the group's inputs 8m .. 8m + 3, high nibbles 8m + 4 .. 8m + 7.

    weight: [out, in] (in % 32 == 0, out % 8 == 0) -> (packed [out // 8, in // 32, 128] uint8,
    scales, mins [out // 8, in // 32, 8] float32)
    """
    out_features, in_features = weight.shape
    blocks, groups = out_features // COLUMNS, in_features // GROUP
    w = weight.float().view(out_features, groups, GROUP)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    levels = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    # [block, column c, group, vector m, low/high, input t] -> [block, group, m, low/high, c, t]
    levels = levels.view(blocks, COLUMNS, groups, 4, 2, 4).permute(0, 2, 3, 4, 1, 5)
    packed = levels[:, :, :, 0] | (levels[:, :, :, 1] << 4)  # [block, group, m, c, t]
    return (
        packed.reshape(blocks, groups, 128).contiguous(),
        _by_column_block(scales),
        _by_column_block(lo),
    )


def _by_column_block(per_group: torch.Tensor) -> torch.Tensor:
    # [out, groups] -> [out // 8, groups, 8]
    out_features, groups = per_group.shape
    blocked = per_group.view(out_features // COLUMNS, COLUMNS, groups)
    return blocked.transpose(1, 2).contiguous()


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """The float32 weights [out, in] that quantize_int4's output stands for."""
    blocks, groups, _ = packed.shape
    bytes_ = packed.view(blocks, groups, 4, COLUMNS, 4)  # [block, group, m, c, t]
    levels = torch.stack([bytes_ & 15, bytes_ >> 4], dim=3)  # [block, group, m, low/high, c, t]
    levels = levels.permute(0, 4, 1, 2, 3, 5).float()  # [block, c, group, m, low/high, t]
    levels = levels.reshape(blocks, COLUMNS, groups, GROUP)
    weight = levels * scales.transpose(1, 2)[..., None] + mins.transpose(1, 2)[..., None]
    return weight.reshape(blocks * COLUMNS, groups * GROUP)
