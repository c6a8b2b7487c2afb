"""Each C kernel (compiled_kernels/csrc) against its torch twin, at the model's shapes and with
the strided inputs the model passes; each row's result must not depend on the batch."""

from __future__ import annotations

import pytest
import torch

from compiled_kernels import native
from compiled_kernels.activation import silu_and_mul, silu_and_mul_reference
from compiled_kernels.norm import (
    add_rms_norm,
    add_rms_norm_reference,
    rms_norm,
    rms_norm_reference,
)
from compiled_kernels.rotary import (
    apply_rotary,
    apply_rotary_reference,
    rope_cos_sin,
    rotary_for_positions,
)

pytestmark = pytest.mark.skipif(native.load() is None, reason="no C compiler")
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
ROWS = pytest.mark.parametrize("rows", [1, 5, 70], ids=["1row", "5rows", "70rows_threaded"])
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE = 576, 9, 3, 64, 1536  # SmolLM2-135M


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    # float32: summation order and exp differ by ~1 ulp. bf16: the kernels round where torch's
    # ops round, so at most an occasional 1-ulp flip (2**-8 relative).
    return dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=8e-3)


def _assert_row_invariant(kernel, *inputs: torch.Tensor) -> None:
    """Row 0 computed alone equals row 0 computed in the full batch, bitwise."""
    full, alone = kernel(*inputs), kernel(*(t[:1] for t in inputs))
    full, alone = (full[0], alone[0]) if isinstance(full, tuple) else (full, alone)
    assert torch.equal(alone[0], full[0])


@DTYPES
@ROWS
def test_rms_norm_c_kernel_matches_twin_on_strided_rows(dtype: torch.dtype, rows: int) -> None:
    gen = torch.Generator().manual_seed(0)
    wide = (torch.randn(rows, 2 * HIDDEN, generator=gen) * 3).to(dtype)
    x = wide[:, :HIDDEN]  # rows 2 * HIDDEN apart
    weight = (torch.rand(HIDDEN, generator=gen) + 0.5).to(dtype)
    result = rms_norm(x, weight, 1e-5)
    torch.testing.assert_close(result, rms_norm_reference(x, weight, 1e-5), **_tolerance(dtype))
    _assert_row_invariant(lambda t: rms_norm(t, weight, 1e-5), x)


@DTYPES
@ROWS
def test_add_rms_norm_c_kernel_matches_twin(dtype: torch.dtype, rows: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(rows, HIDDEN, generator=gen).to(dtype)
    residual = torch.randn(rows, HIDDEN, generator=gen).to(dtype)
    weight = (torch.rand(HIDDEN, generator=gen) + 0.5).to(dtype)
    normed, summed = add_rms_norm(x, residual, weight, 1e-5)
    expected_normed, expected_summed = add_rms_norm_reference(x, residual, weight, 1e-5)
    assert torch.equal(summed, expected_summed)  # one rounded add, as torch's
    torch.testing.assert_close(normed, expected_normed, **_tolerance(dtype))
    _assert_row_invariant(lambda a, b: add_rms_norm(a, b, weight, 1e-5), x, residual)


@DTYPES
@ROWS
def test_rotary_c_kernel_matches_twin_on_the_qkv_layout(dtype: torch.dtype, rows: int) -> None:
    """The model rotates q and k heads straight out of the fused qkv projection's rows."""
    gen = torch.Generator().manual_seed(2)
    qkv = torch.randn(rows, (HEADS + 2 * KV_HEADS) * HEAD_DIM, generator=gen).to(dtype)
    qk = qkv[:, : (HEADS + KV_HEADS) * HEAD_DIM].view(rows, HEADS + KV_HEADS, HEAD_DIM)
    cos, sin = rope_cos_sin(HEAD_DIM, 8192, 100000.0)
    positions = torch.randint(0, 8192, (rows,), generator=gen)
    rope = rotary_for_positions(positions, cos, sin, dtype)
    result = apply_rotary(qk, *rope)
    # Exact in both dtypes: no reduction, and every product and sum rounds as torch's ops do.
    assert torch.equal(result, apply_rotary_reference(qk, *rope))
    _assert_row_invariant(apply_rotary, qk, *rope)


@DTYPES
@ROWS
def test_silu_and_mul_c_kernel_matches_twin(dtype: torch.dtype, rows: int) -> None:
    gen = torch.Generator().manual_seed(3)
    gate_up = (torch.randn(rows, 2 * INTERMEDIATE, generator=gen) * 6).to(dtype)
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # exp clamping at the extremes
    result = silu_and_mul(gate_up)
    torch.testing.assert_close(result, silu_and_mul_reference(gate_up), **_tolerance(dtype))
    _assert_row_invariant(silu_and_mul, gate_up)


@DTYPES
def test_silu_and_mul_gives_the_same_bits_in_vector_lanes_and_in_a_rows_tail(
    dtype: torch.dtype,
) -> None:
    """A row of 9 runs 8 elements through the 8-lane code and the last through the scalar code:
    the same input in all 9 gives 9 equal outputs, extremes, infinities and NaN included."""
    values = [-100.0, -87.5, -3.0, -0.0, 0.0, 1e-40, 0.5, 20.0, 88.5, 100.0]
    values += [float("inf"), float("-inf"), float("nan")]
    gate = torch.tensor(values).to(dtype)[:, None].expand(-1, 9)
    up = torch.full((len(values), 9), 1.5).to(dtype)
    out = silu_and_mul(torch.cat([gate, up], dim=1))
    assert torch.equal(
        out.view(torch.uint8), out[:, -1:].expand(-1, 9).contiguous().view(torch.uint8)
    )


def test_kernels_fall_back_to_twins_where_they_cannot_run() -> None:
    """float16 has no C kernel: the torch twin answers, with the same result."""
    x = torch.randn(3, 64).half()
    weight = torch.ones(64).half()
    assert native.kernels_for(x, weight) is None
    assert torch.equal(rms_norm(x, weight, 1e-5), rms_norm_reference(x, weight, 1e-5))
