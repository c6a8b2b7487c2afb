"""The Triton paged decode kernel against its torch twin, on the GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from compiled_kernels import triton_attention
from compiled_kernels.attention import decode_attention_reference
from compiled_kernels.masking import NO_MASKING, Masking

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not triton_attention.available(), reason="needs CUDA and Triton"),
]

BLOCK_SIZE = 16
NUM_BLOCKS = 64
MAX_BLOCKS = 8


def _inputs(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, context_lens: list[int]):
    gen = torch.Generator(device="cuda").manual_seed(len(context_lens) * head_dim)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device="cuda").to(dtype)

    n = len(context_lens)
    # Full-width cache views, as the engine passes them: one layer of [2, layers, ...].
    k_cache = randn(2, kv_heads, NUM_BLOCKS, BLOCK_SIZE, head_dim)[1]
    v_cache = randn(2, kv_heads, NUM_BLOCKS, BLOCK_SIZE, head_dim)[0]
    tables = torch.stack(
        [torch.randperm(NUM_BLOCKS, generator=gen, device="cuda")[:MAX_BLOCKS] for _ in range(n)]
    )
    # q as the model hands it over: a slice of the rotated q/k heads.
    q = randn(n, heads + kv_heads, head_dim)[:, :heads]
    return q, k_cache, v_cache, tables, torch.tensor(context_lens, device="cuda")


@pytest.mark.parametrize(
    "masking", [NO_MASKING, Masking(window=20), Masking(window=50, softcap=3.0)], ids=str
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "heads,kv_heads,head_dim", [(9, 3, 64), (4, 4, 32), (8, 2, 80)], ids=["smollm2", "mha", "d80"]
)
def test_triton_decode_matches_the_torch_twin(heads, kv_heads, head_dim, dtype, masking):
    context_lens = [1, 16, 17, 100, 128, 0, 33]
    q, k_cache, v_cache, tables, lens = _inputs(heads, kv_heads, head_dim, dtype, context_lens)
    scale = head_dim**-0.5
    out = triton_attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, scale, masking)
    keys = torch.arange(MAX_BLOCKS * BLOCK_SIZE, device="cuda")[None, :]
    mask = keys < lens[:, None]
    if masking.window:
        mask &= keys >= lens[:, None] - masking.window
    expected = decode_attention_reference(
        q, k_cache, v_cache, tables, mask[None, :, None, :], scale, masking.softcap
    )
    live = lens > 0
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out[live], expected[live], atol=tol, rtol=tol)
    assert torch.equal(out[~live], torch.zeros_like(out[~live]))  # padding rows: zeros


def test_triton_decode_rows_do_not_depend_on_the_batch():
    q, k_cache, v_cache, tables, lens = _inputs(9, 3, 64, torch.bfloat16, [5, 77, 128, 40])
    together = triton_attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.125)
    for i in range(len(lens)):
        alone = triton_attention.paged_decode_attention(
            q[i : i + 1], k_cache, v_cache, tables[i : i + 1], lens[i : i + 1], 0.125
        )
        assert torch.equal(alone[0], together[i])
