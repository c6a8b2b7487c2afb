"""The attention step of every layer as one opaque torch op, fed from a per-step context.

Paged attention needs this step's block tables and the KV cache, and loops over decode groups
and prefills in Python; tracing that would tie a compiled graph to the batch's composition. So
`attention` is a custom op: torch.compile sees one call per layer with plain tensor inputs and
outputs and compiles everything around it (norms, projections, rotary, MLP) into a single graph
for the whole model, while the op itself reads the step's metadata from `attention_context`.
Eager mode runs through the same op, so both modes share one code path.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import attrs
import torch

from compiled_kernels.attention import AttentionInputs, paged_attention, write_kv
from compiled_kernels.masking import Masking


@attrs.frozen
class AttentionContext:
    inputs: AttentionInputs
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (k_cache, v_cache)


# A context variable, not a global: engines of different models step in different threads.
_current: contextvars.ContextVar[AttentionContext] = contextvars.ContextVar("attention_context")


@contextlib.contextmanager
def attention_context(
    inputs: AttentionInputs, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]
) -> Iterator[None]:
    token = _current.set(AttentionContext(inputs, kv_caches))
    try:
        yield
    finally:
        _current.reset(token)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: int,
    scale: float,
    window: int = 0,
    softcap: float = 0.0,
) -> torch.Tensor:
    # Eager callers skip the op's dispatch (tens of microseconds a call, 30 calls a step).
    if torch.compiler.is_compiling():
        return attention_op(q, k, v, layer, scale, window, softcap)
    return _attention(q, k, v, layer, scale, window, softcap)


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: int,
    scale: float,
    window: int,
    softcap: float,
) -> torch.Tensor:
    """Writes this step's k, v into the layer's cache, then attends (over the last `window`
    positions only, if not 0; scores soft-capped, if softcap is not 0).

    q: [num_rows, heads, head_dim]; k, v: [num_rows, kv_heads, head_dim] -> [num_rows, heads *
    head_dim]. Rows past the step's real tokens (padding of a compiled batch) are left zero and
    never touch the cache.
    """
    ctx = _current.get()
    k_cache, v_cache = ctx.kv_caches[layer]
    num_tokens = ctx.inputs.slot_mapping.shape[0]
    if num_tokens < k.shape[0]:
        k, v = k[:num_tokens], v[:num_tokens]
    write_kv(k, v, k_cache, v_cache, ctx.inputs.slot_mapping)
    return paged_attention(q, k_cache, v_cache, ctx.inputs, scale, Masking(window, softcap))


attention_op = torch.library.custom_op("lumen::attention", _attention, mutates_args=())


@attention_op.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: int,
    scale: float,
    window: int,
    softcap: float,
) -> torch.Tensor:
    return q.new_empty(q.shape[0], q.shape[1] * q.shape[2])
