"""CPU memory the kernels stream through, backed by 2 MB pages where the kernel allows it.

A decode step reads every weight once (80 MB for the embedded model in int4) and each
sequence's keys and values. On 4 KB pages that is tens of thousands of TLB misses a step, and
with transparent huge pages in `madvise` mode (the common default) torch's allocations never
get anything larger. `madvise(MADV_HUGEPAGE)` on a region of our own, before it is first
written, asks for 2 MB pages there; the kernel falls back to small pages when it has none
free, so this only ever changes speed. Measured on AMD EPYC Zen 3: the int4 layers of one
decode step at 1 row 0.87x-0.91x the time, unchanged at 32 rows (docs/performance.md).

Only the memory's backing changes: values, shapes, strides and aliasing stay as they were.
"""

from __future__ import annotations

import math
import mmap

import torch

HUGE_PAGE = 2 << 20
_ALIGN = 64  # every storage starts on a cache line


def huge_page_bytes(nbytes: int) -> torch.Tensor:
    """A zero-filled uint8 tensor of nbytes, on memory advised for 2 MB pages (plain torch
    memory where the platform has no such advice). The pages are allocated as it is written."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or nbytes < HUGE_PAGE:
        return torch.zeros(nbytes, dtype=torch.uint8)
    # Anonymous mappings are page aligned and read as zeros; the tensor keeps the map alive.
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(advice)
    except OSError:
        pass  # THP disabled ("never"): small pages, as before
    return torch.frombuffer(region, dtype=torch.uint8)


def huge_page_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """torch.zeros(shape, dtype=dtype) on huge-page memory, every page touched now (so that the
    memory is taken at startup, as torch.zeros takes it, not when the first request writes)."""
    memory = huge_page_bytes(math.prod(shape) * dtype.itemsize)
    memory.zero_()
    return memory.view(dtype).view(shape)


def move_to_huge_pages(module: torch.nn.Module) -> None:
    """Every CPU parameter and buffer of module moved into one huge-page region, in place.

    Storages move whole, so tensors that share one (a tied LM head, views) still share it.
    Each old storage is freed once its tensors point at the new one, so the peak is about
    the weights' size plus the largest storage.
    """
    # (owner, name, is_parameter, old storage address): a tied parameter appears twice
    slots: list[tuple[torch.nn.Module, str, bool, int]] = []
    storages: dict[int, int] = {}  # storage address -> its byte offset in the region
    total = 0
    for owner in module.modules():
        for kind, tensors in ((True, owner._parameters), (False, owner._buffers)):
            for name, tensor in tensors.items():
                if tensor is None or tensor.device.type != "cpu":
                    continue
                storage = tensor.untyped_storage()
                slots.append((owner, name, kind, storage.data_ptr()))
                if storage.data_ptr() not in storages:
                    storages[storage.data_ptr()] = total
                    total += -(-storage.nbytes() // _ALIGN) * _ALIGN
    if total < HUGE_PAGE:
        return
    region = huge_page_bytes(total)
    copied: set[int] = set()
    for owner, name, is_parameter, address in slots:
        tensor = owner._parameters[name] if is_parameter else owner._buffers[name]
        old = tensor.untyped_storage()
        if old.data_ptr() != address:
            continue  # the same parameter object, already moved through another owner
        start = storages[address]
        if address not in copied:
            region[start : start + old.nbytes()].copy_(torch.empty(0, dtype=torch.uint8).set_(old))
            copied.add(address)
        view = torch.empty(0, dtype=tensor.dtype).set_(
            region.untyped_storage(),
            start // tensor.element_size() + tensor.storage_offset(),
            tensor.shape,
            tensor.stride(),
        )
        if is_parameter:
            tensor.data = view
        else:
            owner._buffers[name] = view
