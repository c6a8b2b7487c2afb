"""The linear layers' batch invariance, checked so that it fails on any CPU where it does not
hold: every row count from 1 to 64 and a few large ones, every row position, every weight kind
(float32, bfloat16, int8, int4), with and without bias, at every instruction-set level this CPU
runs; then the library-GEMM paths (position-aligned tiles for prompts, packed tiles and the
probe that allows them), and accuracy against F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compiled_kernels import native
from compiled_kernels.linear import (
    INT4_ACTIVATION_LEVELS,
    INT8_ACTIVATION_LEVELS,
    TILE_ROWS,
    WEIGHT_BF16,
    WEIGHT_F32,
    WEIGHT_INT4,
    WEIGHT_INT8,
    _run,
    dequantize_int4,
    dequantize_int8,
    int4_linear,
    int8_linear,
    library_rows,
    library_rows_are_offset_free,
    linear,
    linear_by_tiles,
    quantize_activations,
    quantize_int4,
    quantize_int8,
)
from engine.models.linear import NO_POSITIONS, LibraryPlan, Linear, library_matmul

pytestmark = pytest.mark.skipif(native.load() is None, reason="no C compiler")
ROW_COUNTS = [*range(1, 65), 96, 128, 255, 300]
IN, OUT = 200, 72  # 200 inputs: not a multiple of 8 (nor of 16), so the tail path runs too
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def _weights(kind: str, dtype: torch.dtype, with_bias: bool, in_features: int = IN):
    """(weight tensors for _run, weight kind, bias, the float weight they stand for)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(OUT, in_features, generator=gen) / in_features**0.5
    bias = torch.randn(OUT, generator=gen).to(dtype) if with_bias else None
    if kind == "float":
        weight = weight.to(dtype)
        code = WEIGHT_BF16 if dtype is torch.bfloat16 else WEIGHT_F32
        return (weight, None, None), code, bias, weight.float()
    if kind == "int8":
        # 70 columns: a partial block of 8; with 200 inputs, a partial group of 32
        q, scales = quantize_int8(weight[:70])
        bias = None if bias is None else bias[:70]
        return (q, scales, None), WEIGHT_INT8, bias, dequantize_int8(q, scales)[:70, :in_features]
    packed, scales, mins = quantize_int4(weight)
    return (packed, scales, mins), WEIGHT_INT4, bias, dequantize_int4(packed, scales, mins)


def _expected(kind: str, x: torch.Tensor, reference: torch.Tensor, bias) -> torch.Tensor:
    """What the layer computes in float32: int8 and int4 multiply the activations' 16-bit and
    8-bit levels."""
    x = x.float()
    if kind != "float":
        levels = INT8_ACTIVATION_LEVELS if kind == "int8" else INT4_ACTIVATION_LEVELS
        x = quantize_activations(x, levels)
    return F.linear(x, reference, None if bias is None else bias.float())


def _assert_every_batch_gives_the_same_rows(run, x: torch.Tensor) -> None:
    """Rows computed in a call of any size, at any position, equal the same rows in one call
    of all of x, bitwise."""
    full = run(x)
    for rows in ROW_COUNTS:
        first = (rows * 7) % (x.shape[0] - rows + 1)  # windows start all over x
        part = run(x[first : first + rows])
        for i in range(rows):  # row i sits at position i of this call, first + i of the full one
            assert torch.equal(part[i], full[first + i]), (
                f"{rows} rows: row {i} differs by "
                f"{(part[i].float() - full[first + i].float()).abs().max().item():.3g}"
            )


@DTYPES
@pytest.mark.parametrize("kind", ["float", "int8", "int4"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("level", native.supported_levels())
def test_every_row_is_independent_of_the_batch_at_every_isa_level(
    dtype: torch.dtype, kind: str, with_bias: bool, level: str
) -> None:
    lib = native.load_level(level)
    if lib is None:
        pytest.skip(f"cannot build the kernels for {level}")
    (weight, scales, mins), code, bias, reference = _weights(
        kind, dtype, with_bias, in_features=IN if kind != "int4" else 256
    )
    x = torch.randn(300, reference.shape[1], generator=torch.Generator().manual_seed(1))
    x = x.to(dtype)

    def run(rows: torch.Tensor) -> torch.Tensor:
        return _run(lib, rows, weight, scales, mins, bias, code, reference.shape[0])

    _assert_every_batch_gives_the_same_rows(run, x)
    # And each level computes the layer, not just something invariant.
    expected = _expected(kind, x, reference, bias)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype is torch.float32 else dict(atol=5e-2, rtol=2e-2)
    torch.testing.assert_close(run(x).float(), expected, **tol)


FMA_LEVELS = [lv for lv in native.supported_levels() if lv.startswith(("x86-64-v3", "x86-64-v4"))]


@pytest.mark.skipif(len(FMA_LEVELS) < 2, reason="this CPU runs fewer than two FMA levels")
@pytest.mark.parametrize("kind", ["float", "int8", "int4"])
def test_every_fma_level_gives_the_same_bits(kind: str) -> None:
    """A v3 and a v4 machine serving one model agree bitwise (the AVX-512 build must not
    change the order of the sums)."""
    (weight, scales, mins), code, bias, reference = _weights(kind, torch.float32, True, 256)
    x = torch.randn(37, 256, generator=torch.Generator().manual_seed(3))
    outs = [
        _run(native.load_level(lv), x, weight, scales, mins, bias, code, reference.shape[0])
        for lv in FMA_LEVELS
    ]
    for level, out in zip(FMA_LEVELS[1:], outs[1:], strict=True):
        assert torch.equal(out, outs[0]), f"{level} differs from {FMA_LEVELS[0]}"


def test_rows_read_from_a_strided_view_equal_contiguous_rows() -> None:
    """The model passes column slices of wider tensors (rows further apart than in_features)."""
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(OUT, IN, generator=gen)
    wide = torch.randn(40, 2 * IN, generator=gen)
    assert torch.equal(linear(wide[:, :IN], weight), linear(wide[:, :IN].contiguous(), weight))


@DTYPES
def test_linear_matches_f_linear_at_model_shapes(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    weight = (torch.randn(1536, 576, generator=gen) / 24).to(dtype)
    bias = torch.randn(1536, generator=gen).to(dtype)
    x = torch.randn(70, 576, generator=gen).to(dtype)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    for rows in (1, 2, 5, 32, 70):
        torch.testing.assert_close(
            linear(x[:rows], weight, bias), F.linear(x[:rows], weight, bias), **tol
        )
        torch.testing.assert_close(linear(x[:rows], weight), F.linear(x[:rows], weight), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_quantized_linears_match_their_dequantized_weights(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(96, 128, generator=gen) * 0.05
    x = torch.randn(9, 128, generator=gen).to(dtype)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    q, scales = quantize_int8(weight)
    torch.testing.assert_close(
        int8_linear(x, q, scales, 96).float(),
        quantize_activations(x.float(), INT8_ACTIVATION_LEVELS) @ dequantize_int8(q, scales).t(),
        **tol,
    )
    packed, scales, mins = quantize_int4(weight)
    torch.testing.assert_close(
        int4_linear(x, packed, scales, mins).float(),
        quantize_activations(x.float()) @ dequantize_int4(packed, scales, mins).t(),
        **tol,
    )


@DTYPES
def test_library_tiles_give_a_prompt_the_same_rows_however_it_is_cut(dtype: torch.dtype) -> None:
    """Prefill through the library GEMM: one 150-token prompt computed whole, or cut into
    chunks at other places and surrounded by other sequences' rows, gives the same rows."""
    gen = torch.Generator().manual_seed(4)
    weight = (torch.randn(OUT, IN, generator=gen) / 15).to(dtype)
    bias = torch.randn(OUT, generator=gen).to(dtype)
    prompt = torch.randn(150, IN, generator=gen).to(dtype)
    others = torch.randn(5, IN, generator=gen).to(dtype)
    whole = linear_by_tiles(prompt, weight, bias, ((0, 150, 0),), None)

    for cut in (1, 2, 37, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 149):
        # Step 1: two other rows, then the first `cut` tokens; step 2: the rest, then 3 rows.
        step1 = torch.cat([others[:2], prompt[:cut]])
        step2 = torch.cat([prompt[cut:], others[2:]])
        first = linear_by_tiles(step1, weight, bias, ((2, 2 + cut, 0),), torch.tensor([0, 1]))
        rest = 150 - cut
        second = linear_by_tiles(
            step2, weight, bias, ((0, rest, cut),), torch.arange(rest, rest + 3)
        )
        assert torch.equal(first[2:], whole[:cut]), cut
        assert torch.equal(second[:rest], whole[cut:]), cut
        # The other rows went through library_rows, as they would alone.
        assert torch.equal(first[:2], library_rows(others[:2], weight, bias))
        assert torch.equal(second[rest:], library_rows(others[2:], weight, bias))
    torch.testing.assert_close(
        whole.float(),
        F.linear(prompt.float(), weight.float(), bias.float()),
        **(dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=5e-2, rtol=2e-2)),
    )


@DTYPES
def test_packed_library_rows_are_independent_of_the_batch(dtype: torch.dtype) -> None:
    """Rows without positions (generated tokens, the LM head) packed into library tiles where
    the library allows it, else through the kernel: invariant either way."""
    gen = torch.Generator().manual_seed(6)
    weight = (torch.randn(OUT, IN, generator=gen) / 15).to(dtype)
    bias = torch.randn(OUT, generator=gen).to(dtype)
    x = torch.randn(300, IN, generator=gen).to(dtype)
    _assert_every_batch_gives_the_same_rows(lambda rows: library_rows(rows, weight, bias), x)


@pytest.mark.parametrize("rows", [7, TILE_ROWS])
@DTYPES
def test_offset_probe_agrees_with_every_offset(rows: int, dtype: torch.dtype) -> None:
    """The probe's two rotations answer what placing one row at every offset of the call
    answers (at 7 rows MKL's float32 GEMM is offset-dependent on AVX2 machines)."""
    gen = torch.Generator().manual_seed(7)
    weight = (torch.randn(OUT, IN, generator=gen) / 15).to(dtype)
    tile = torch.randn(rows, IN, generator=gen).to(dtype)
    row = tile[0].clone()
    at_offsets = []
    for offset in range(rows):
        placed = tile.clone()
        placed[offset] = row
        at_offsets.append(F.linear(placed, weight)[offset])
    exhaustive = all(torch.equal(out, at_offsets[0]) for out in at_offsets)
    assert library_rows_are_offset_free(weight, None, rows) == exhaustive


def test_linear_layer_follows_the_library_plan_only_for_the_step_it_was_made_for() -> None:
    gen = torch.Generator().manual_seed(5)
    layer = Linear(IN, OUT)
    layer.weight.data = torch.randn(OUT, IN, generator=gen)
    x = torch.randn(10, IN, generator=gen)
    plan = LibraryPlan(10, ((2, 10, 40),), torch.tensor([0, 1]))
    with torch.inference_mode():
        with library_matmul(plan):
            tiled = layer(x)
            fewer_rows = layer(x[:3])  # not the step's rows: packed
        with library_matmul(NO_POSITIONS):
            head = layer(x)
        alone = layer(x)
    assert torch.equal(tiled, linear_by_tiles(x, layer.weight, None, plan.chunks, plan.other_rows))
    assert torch.equal(fewer_rows, library_rows(x[:3], layer.weight, None))
    assert torch.equal(head, library_rows(x, layer.weight, None))
    assert torch.equal(alone, linear(x, layer.weight))
