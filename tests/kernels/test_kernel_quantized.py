"""Weight-only int8/int4 layers: the quantizers and the model's quantized modules (the kernel's
invariance and accuracy are in test_kernel_linear.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compiled_kernels import native
from compiled_kernels.linear import (
    INT8_ACTIVATION_LEVELS,
    WEIGHT_INT4,
    _run,
    dequantize_int4,
    dequantize_int8,
    int4_linear,
    int8_linear,
    quantize_activations,
    quantize_int4,
    quantize_int8,
)
from engine.models.linear import Int4Linear, Int8Linear, Linear, quantize_linears


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_equals_matmul_with_dequantized_weight(dtype):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(90, 80, generator=gen) * 0.05  # partial column block and group
    x = torch.randn(5, 80, generator=gen).to(dtype)
    q, scales = quantize_int8(weight)
    assert q.dtype == torch.int8 and q.shape == (12, 3, 256)
    assert scales.dtype == torch.float32 and scales.shape == (12, 3, 8)
    dequantized = dequantize_int8(q, scales)
    assert not dequantized[90:].any() and not dequantized[:, 80:].any()  # zero padding
    dequantized = dequantized[:90, :80]
    expected = quantize_activations(x.float(), INT8_ACTIVATION_LEVELS) @ dequantized.t()
    tol = dict(atol=1e-4, rtol=1e-4) if dtype is torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(int8_linear(x, q, scales, 90).float(), expected, **tol)
    # Each weight stays within half a step of its group's scale (max|w| / 127).
    steps = F.pad(weight, (0, 16)).view(90, 3, 32).abs().amax(dim=-1) / 127
    error = (dequantized - weight).view(90, -1)
    assert (error.abs() <= steps.repeat_interleave(32, dim=1)[:, :80] / 2 + 1e-7).all()


def test_int8_is_exact_for_weights_already_on_an_8_bit_grid():
    """A GGUF Q8_0 tensor dequantizes to d * q per 32 inputs with max |q| = 127: quantizing it
    again finds the same levels."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(-127, 128, (16, 2, 32), generator=gen)
    q[..., 0] = 127
    d = torch.rand(16, 2, 1, generator=gen) * 0.01 + 0.001
    weight = (d * q).view(16, 64)
    levels, scales = quantize_int8(weight)
    torch.testing.assert_close(dequantize_int8(levels, scales), weight, atol=1e-7, rtol=1e-6)


def test_int4_is_exact_for_weights_already_on_a_4_bit_grid():
    """A GGUF Q4_1 checkpoint dequantizes to d * q + m per 32 inputs: re-quantizing with the
    same groups finds that grid again, so nothing is lost beyond rounding the scales (and the
    layer then multiplies by the activations' 8-bit levels, as GGUF's Q4_1 x Q8 product does)."""
    gen = torch.Generator().manual_seed(0)
    out_features, in_features, group = 64, 128, 32
    q = torch.randint(0, 16, (out_features, in_features // group, group), generator=gen)
    q[..., 0], q[..., 1] = 0, 15  # each group spans the whole grid, as Q4_1 makes it
    d = torch.rand(out_features, in_features // group, 1, generator=gen) * 0.01 + 0.001
    m = torch.randn(out_features, in_features // group, 1, generator=gen) * 0.05
    weight = (d * q + m).view(out_features, in_features)
    x = torch.randn(3, in_features, generator=gen)
    packed, scales, mins = quantize_int4(weight)
    assert packed.shape == (out_features // 8, in_features // group, 128)
    assert packed.dtype == torch.uint8
    assert scales.shape == mins.shape == (out_features // 8, in_features // group, 8)
    torch.testing.assert_close(dequantize_int4(packed, scales, mins), weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        int4_linear(x, packed, scales, mins),
        quantize_activations(x) @ weight.t(),
        atol=1e-4,
        rtol=1e-4,
    )


def test_activations_keep_eight_bits_per_group_of_32():
    """Each row's group of 32 inputs becomes levels -127..127 times max|x| / 127: the largest
    input is exact, every other within half a step, groups and rows independent."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, generator=gen) * torch.tensor([1.0, 100.0]).repeat_interleave(32)
    x[2, 32:] = 0
    quantized = quantize_activations(x)
    steps = x.view(3, 2, 32).abs().amax(dim=-1, keepdim=True) / 127
    error = (quantized - x).view(3, 2, 32).abs()
    assert (error <= steps / 2 * (1 + 1e-5)).all()
    assert torch.equal(quantized[2, 32:], x[2, 32:])  # an all-zero group stays zero
    assert torch.equal(quantize_activations(x[:1]), quantized[:1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("level", native.supported_levels())
def test_every_isa_level_quantizes_activations_alike_ties_to_even(dtype, level):
    """The vector and the portable quantizers give the same levels, half-way values rounded to
    even. Read through an int4 layer whose arithmetic is exact: weights on the integer grid
    (scale 1, min 0) and groups whose max|x| is 127 * 2^k, so each step is 2^k."""
    lib = native.load_level(level)
    if lib is None:
        pytest.skip(f"cannot build the kernels for {level}")
    gen = torch.Generator().manual_seed(4)
    rows, in_features, group = 9, 128, 32
    q = torch.randint(0, 16, (16, in_features), generator=gen).float()
    q[:, ::group], q[:, 1::group] = 0, 15  # every group spans 0..15: scale 1, min 0
    packed, scales, mins = quantize_int4(q)
    # Levels -126..126 in halves (ties), then 127 at a random place as the group's max.
    halves = torch.randint(-252, 253, (rows, in_features), generator=gen).float() / 2
    peak = torch.randint(0, group, (rows, in_features // group), generator=gen)
    halves.view(rows, -1, group).scatter_(2, peak[..., None], 127.0)
    # Small powers keep every partial sum on the float32 grid (below 2^24 units of 2^-2).
    powers = 2.0 ** torch.randint(-2, 3, (rows, in_features // group, 1), generator=gen)
    x = (halves.view(rows, -1, group) * powers).view(rows, in_features).to(dtype)
    levels = torch.round(halves.double())  # half to even
    expected = ((levels.view(rows, -1, group) * powers.double()).view(rows, -1)) @ q.double().t()
    out = _run(lib, x, packed, scales, mins, None, WEIGHT_INT4, 16)
    assert torch.equal(out.double(), expected.to(dtype).double())


def test_int4_layer_passes_inf_and_nan_on_as_nan():
    """A non-finite input poisons its row's outputs (as a float matmul would), never others."""
    gen = torch.Generator().manual_seed(2)
    packed, scales, mins = quantize_int4(torch.randn(16, 64, generator=gen))
    x = torch.randn(3, 64, generator=gen)
    x[0, 5], x[1, 40] = float("inf"), float("nan")
    y = int4_linear(x, packed, scales, mins)
    assert y[:2].isnan().all() and y[2].isfinite().all()


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_modules_keep_the_bias_and_rows_do_not_depend_on_batch_size(mode):
    gen = torch.Generator().manual_seed(0)
    layer = Linear(64, 96, bias=True)
    layer.weight.data = (torch.randn(96, 64, generator=gen) * 0.05).bfloat16()
    layer.bias.data = torch.randn(96, generator=gen).bfloat16()
    quantized = Int8Linear(layer) if mode == "int8" else Int4Linear(layer)
    x = torch.randn(33, 64, generator=gen).bfloat16()
    full = quantized(x)
    torch.testing.assert_close(
        full.float(),
        x.float() @ layer.weight.float().t() + layer.bias.float(),
        atol=0.15,
        rtol=0.05,
    )
    for rows in (1, 2, 3, 4, 17):
        assert torch.equal(quantized(x[:rows]), full[:rows])


def test_quantize_linears_swaps_every_linear_and_keeps_the_head_at_int8():
    model = torch.nn.Module()
    model.block = torch.nn.Module()
    model.block.proj = Linear(64, 32)
    model.lm_head = Linear(64, 100)
    for layer in (model.block.proj, model.lm_head):
        layer.weight.data.normal_()
    quantize_linears(model, "int4")
    assert isinstance(model.block.proj, Int4Linear)
    assert isinstance(model.lm_head, Int8Linear)
    quantize_linears(model, "none")  # a no-op
    assert isinstance(model.block.proj, Int4Linear)
