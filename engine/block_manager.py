"""Fixed-size KV cache blocks: a free list and a ref count per block. Plain Python, no torch."""

from __future__ import annotations

from collections import deque

from engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        assert num_blocks > 0 and block_size > 0
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        # Ref counts are there for prefix sharing later; today an allocated block has ref 1.
        self.ref_counts: list[int] = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def usage(self) -> float:
        return (self.num_blocks - self.num_free_blocks) / self.num_blocks

    def num_blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """Blocks to add so that seq.block_table covers num_tokens tokens."""
        total = -(-num_tokens // self.block_size)
        return max(0, total - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        return self.num_blocks_needed(seq, num_tokens) <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        needed = self.num_blocks_needed(seq, num_tokens)
        assert needed <= self.num_free_blocks, f"need {needed}, have {self.num_free_blocks}"
        for _ in range(needed):
            # Take the longest-free block first; once prefix caching keeps freed blocks'
            # contents around, this is the LRU order.
            block_id = self.free_block_ids.popleft()
            assert self.ref_counts[block_id] == 0, f"block {block_id} free but referenced"
            self.ref_counts[block_id] = 1
            seq.block_table.append(block_id)

    def free(self, seq: Sequence) -> None:
        # Reverse order puts a sequence's tail blocks ahead of its head in the free list, so
        # they are reused first: a prefix cache would rather keep the shareable head.
        for block_id in reversed(seq.block_table):
            assert self.ref_counts[block_id] > 0, f"double free of block {block_id}"
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self.free_block_ids.append(block_id)
        seq.block_table.clear()
        assert self.num_free_blocks <= self.num_blocks

    def check_invariants(self) -> None:
        """O(num_blocks) consistency check, for tests and debugging."""
        assert all(r >= 0 for r in self.ref_counts)
        free = set(self.free_block_ids)
        assert len(free) == len(self.free_block_ids), "a block is in the free list twice"
        used = {b for b, r in enumerate(self.ref_counts) if r > 0}
        assert not free & used, "a referenced block is in the free list"
        assert len(free) + len(used) == self.num_blocks, "a block is neither free nor used"
