"""RMSNorm, rotary embeddings and the gated activation, against the formulas of the HF
reference (the C kernels where they are built; test_kernel_native.py compares them with their
torch twins). The linear layers have test_kernel_linear.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compiled_kernels.activation import silu_and_mul
from compiled_kernels.norm import add_rms_norm, rms_norm
from compiled_kernels.rotary import apply_rotary, rope_cos_sin, rotary_for_positions

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
EPS = 1e-5


def _same_rounding(dtype: torch.dtype) -> dict[str, float]:
    """Same operations, dtypes and roundings as the reference: bitwise equal in bf16 here; in
    float32 the C kernels sum in another order (and approximate exp), so within ~1 ulp."""
    return dict(atol=0, rtol=0) if dtype == torch.bfloat16 else dict(atol=1e-6, rtol=1e-6)


def _hf_rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm.forward, written out."""
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + eps)
    return weight * hidden_states.to(input_dtype)


@DTYPES
def test_rms_norm_matches_hf_formula(dtype: torch.dtype) -> None:
    x = (torch.randn(5, 64) * 3).to(dtype)
    weight = (torch.rand(64) + 0.5).to(dtype)

    out = rms_norm(x, weight, EPS)

    assert out.dtype == dtype and out.shape == x.shape
    # The weight multiplies the already-rounded normalised value, not the float32 one, as HF.
    torch.testing.assert_close(out, _hf_rms_norm(x, weight, EPS), **_same_rounding(dtype))


def test_rms_norm_fp32_is_accurate_against_float64() -> None:
    x = torch.randn(5, 64) * 3
    weight = torch.rand(64) + 0.5
    x64 = x.double()
    expected = weight.double() * x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + EPS)
    torch.testing.assert_close(rms_norm(x, weight, EPS).double(), expected, atol=1e-5, rtol=1e-5)


@DTYPES
def test_add_rms_norm_returns_norm_of_sum_and_the_sum(dtype: torch.dtype) -> None:
    x = torch.randn(5, 64).to(dtype)
    residual = torch.randn(5, 64).to(dtype)
    weight = (torch.rand(64) + 0.5).to(dtype)

    normed, new_residual = add_rms_norm(x, residual, weight, EPS)

    summed = x + residual  # HF adds the residual in the model dtype
    torch.testing.assert_close(new_residual, summed, atol=0, rtol=0)
    torch.testing.assert_close(normed, _hf_rms_norm(summed, weight, EPS), **_same_rounding(dtype))
    assert normed.dtype == dtype and new_residual.dtype == dtype


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _reference_rotary(
    x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """HF apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, with emb = cat(freqs, freqs)."""
    c = torch.cat((cos, cos), dim=-1)[positions].unsqueeze(1).to(x.dtype)
    s = torch.cat((sin, sin), dim=-1)[positions].unsqueeze(1).to(x.dtype)
    return x * c + _rotate_half(x) * s


def test_rope_tables_match_hf_inv_freq() -> None:
    head_dim, theta = 64, 10000.0
    cos, sin = rope_cos_sin(head_dim, 4096, theta)
    assert cos.shape == sin.shape == (4096, head_dim // 2)
    assert cos.dtype == sin.dtype == torch.float32
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.arange(4096, dtype=torch.float64)[:, None] * inv_freq[None, :]
    # float32 angles of positions up to 4095 carry ~1e-4 rounding; that is HF's precision too.
    torch.testing.assert_close(cos.double(), angles.cos(), atol=1e-3, rtol=0)
    torch.testing.assert_close(sin.double(), angles.sin(), atol=1e-3, rtol=0)
    assert torch.equal(cos[0], torch.ones(head_dim // 2))
    assert torch.equal(sin[0], torch.zeros(head_dim // 2))


@DTYPES
def test_apply_rotary_matches_rotate_half_reference(dtype: torch.dtype) -> None:
    head_dim = 16
    cos, sin = rope_cos_sin(head_dim, 2048, 500000.0)
    positions = torch.tensor([0, 1, 2, 7, 1000, 3, 2047, 512, 1000])  # arbitrary, repeats
    x = torch.randn(len(positions), 3, head_dim).to(dtype)

    out = apply_rotary(x, *rotary_for_positions(positions, cos, sin, dtype))

    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, _reference_rotary(x, positions, cos, sin))
    # Position 0 is the identity.
    torch.testing.assert_close(out[0], x[0], atol=0, rtol=0)


def test_apply_rotary_preserves_pair_norms() -> None:
    head_dim = 16
    cos, sin = rope_cos_sin(head_dim, 128, 10000.0)
    positions = torch.randint(0, 128, (6,))
    x = torch.randn(6, 2, head_dim, dtype=torch.float32)
    out = apply_rotary(x, *rotary_for_positions(positions, cos, sin, x.dtype))
    half = head_dim // 2
    pair_norm = lambda t: t[..., :half] ** 2 + t[..., half:] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x))


@DTYPES
def test_silu_and_mul_is_silu_gate_times_up(dtype: torch.dtype) -> None:
    gate_up = (torch.randn(7, 2 * 24) * 4).to(dtype)
    gate, up = gate_up[:, :24], gate_up[:, 24:]

    out = silu_and_mul(gate_up)

    assert out.shape == (7, 24) and out.dtype == dtype
    torch.testing.assert_close(out, F.silu(gate) * up, **_same_rounding(dtype))
