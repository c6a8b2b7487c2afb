"""Fixed-size KV cache blocks: a free list, ref counts and a prefix cache. Plain Python, no torch.

Automatic prefix caching (vLLM's design): every full block whose KV is computed is registered
under a chain hash of (hash of the previous block, the block's token ids), so a block matches
only together with its whole prefix. A new sequence shares the cached blocks of its longest
matching prefix and computes only the rest. A freed block keeps its hash and stays in the free
list: it is free capacity, but until it is handed out for new data its KV can still be hit.
The free list is the LRU order: freed blocks go to the back, allocation takes from the front.

With a sliding window on every layer, a sequence's blocks that no future token can see are
given back as its computed tokens advance (`release_outside_window`), so its memory stays
bounded by the window however long it grows; they stay cached while they sit free.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence as Seq

from engine.sequence import Sequence

# What a hashed block stores to verify a hit: (parent hash, its token ids).
BlockKey = tuple[int | None, tuple[int, ...]]


def hash_block(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """128-bit chain hash of one full block.

    Cryptographic, not Python's hash(): a hit is verified against the block's own tokens, but
    its prefix only through the parent hash, so prefix collisions must be infeasible to craft.
    """
    h = hashlib.blake2b(digest_size=16)
    if parent_hash is not None:
        h.update(parent_hash.to_bytes(16, "little"))
    h.update(array("q", token_ids).tobytes())
    return int.from_bytes(h.digest(), "little")


class BlockManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_prefix_caching: bool = True,
        sliding_window: int = 0,
    ) -> None:
        assert num_blocks > 0 and block_size > 0 and sliding_window >= 0
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        # Tokens every layer's queries look back over (the query's own included); 0: all.
        self.sliding_window = sliding_window
        # Keys only, in LRU order; an OrderedDict so that a cache hit can take a block out of
        # the middle in O(1).
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.ref_counts: list[int] = [0] * num_blocks
        # Per block: its hash and key once registered (kept while it sits free), else None.
        self.block_hashes: list[int | None] = [None] * num_blocks
        self.block_keys: list[BlockKey | None] = [None] * num_blocks
        # hash -> the block that serves hits for it. A block computed twice (two sequences with
        # the same prefix at once) keeps its hash, but only the first registered is here.
        self.cached_block_ids: dict[int, int] = {}
        # Cumulative, in tokens, like vLLM's prefix_cache_queries / prefix_cache_hits.
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def usage(self) -> float:
        # Cached blocks nobody references are free capacity, so they don't count.
        return (self.num_blocks - self.num_free_blocks) / self.num_blocks

    def num_blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """Blocks to add so that seq.block_table covers num_tokens tokens."""
        total = -(-num_tokens // self.block_size)
        return max(0, total - len(seq.block_table))

    # -- prefix cache ---------------------------------------------------------------------

    def find_cached_blocks(self, seq: Sequence) -> list[int]:
        """The cached blocks of seq's longest cached prefix, for admission. No side effects.

        At most (num_tokens - 1) // block_size blocks: at least one token must run to produce
        logits, and the block it lands in must be a fresh one (a shared block is never written),
        so a fully cached, block-aligned sequence recomputes its last block.
        """
        if not self.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            # Prompt logprobs need the logits of every prompt position: nothing may be skipped.
            return []
        assert not seq.block_table, f"{seq} already holds blocks"
        bs = self.block_size
        num_blocks = (seq.num_tokens - 1) // bs
        hashes = self._hashes(seq, num_blocks)[:num_blocks]
        hits: list[int] = []
        parent: int | None = None
        for i, block_hash in enumerate(hashes):
            block_id = self.cached_block_ids.get(block_hash)
            # A hash collision must not share another prefix's KV: compare the stored key.
            key = (parent, tuple(seq.token_ids[i * bs : (i + 1) * bs]))
            if block_id is None or self.block_keys[block_id] != key:
                break
            hits.append(block_id)
            parent = block_hash
        return hits

    def allocate_prefix(self, seq: Sequence, cached_block_ids: Seq[int]) -> int:
        """Share the blocks from find_cached_blocks(seq); return how many tokens they hold.

        Counts the admission for the hit-rate counters. Call it before allocate(), and only
        after can_allocate() with the same blocks said yes.
        """
        assert not seq.block_table and seq.num_computed_tokens == 0, f"{seq} is not new"
        num_cached = len(cached_block_ids) * self.block_size
        assert num_cached < seq.num_tokens, "at least one token must be computed"
        hashes = self._hashes(seq, len(cached_block_ids))[: len(cached_block_ids)]
        for block_id, block_hash in zip(cached_block_ids, hashes, strict=True):
            assert self.block_hashes[block_id] == block_hash, f"stale hit on block {block_id}"
            if self.ref_counts[block_id] == 0:
                del self.free_block_ids[block_id]  # cached but free: in use again
            self.ref_counts[block_id] += 1
            seq.block_table.append(block_id)
        if self.enable_prefix_caching:
            self.num_queried_tokens += seq.num_tokens
            self.num_hit_tokens += num_cached
        return num_cached

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Register seq's full blocks whose KV is now computed, so later sequences can hit them.

        Call after num_computed_tokens advances. Registered blocks always form a prefix of the
        block table, so walking back from the last full computed block to the first hashed one
        visits only the new blocks.
        """
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = seq.num_computed_tokens // bs
        assert num_full <= len(seq.block_table)
        first_new = num_full
        # Released blocks are not the sequence's any more: the walk stops before them.
        while (
            first_new > seq.num_released_blocks
            and self.block_hashes[seq.block_table[first_new - 1]] is None
        ):
            first_new -= 1
        hashes = self._hashes(seq, num_full)
        for i in range(first_new, num_full):
            block_id, block_hash = seq.block_table[i], hashes[i]
            # Only a block this sequence owns alone can be unhashed (hits are hashed).
            assert self.ref_counts[block_id] == 1, f"unhashed block {block_id} is shared"
            self.block_hashes[block_id] = block_hash
            parent = hashes[i - 1] if i > 0 else None
            self.block_keys[block_id] = (parent, tuple(seq.token_ids[i * bs : (i + 1) * bs]))
            # First come keeps the entry: a duplicate or a collision adds nothing here.
            self.cached_block_ids.setdefault(block_hash, block_id)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block nobody uses. True if the cache is now empty."""
        for block_id in self.free_block_ids:
            self._uncache(block_id)
        return not self.cached_block_ids

    def _hashes(self, seq: Sequence, num_blocks: int) -> list[int]:
        """seq.block_hashes, extended to cover at least its first num_blocks full blocks."""
        bs = self.block_size
        assert num_blocks * bs <= seq.num_tokens
        hashes = seq.block_hashes
        while len(hashes) < num_blocks:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block(parent, tuple(seq.token_ids[i * bs : (i + 1) * bs])))
        return hashes

    def _uncache(self, block_id: int) -> None:
        block_hash = self.block_hashes[block_id]
        if block_hash is None:
            return
        if self.cached_block_ids.get(block_hash) == block_id:
            del self.cached_block_ids[block_hash]
        self.block_hashes[block_id] = None
        self.block_keys[block_id] = None

    # -- allocation -----------------------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_tokens: int, cached_block_ids: Seq[int] = ()) -> bool:
        """Whether seq can cover num_tokens, sharing cached_block_ids first (at admission).

        A hit on a block in use costs nothing; a hit on a cached free block takes it out of
        the free list, so it costs one free block like a fresh one.
        """
        num_fresh = max(0, self.num_blocks_needed(seq, num_tokens) - len(cached_block_ids))
        num_revived = sum(1 for b in cached_block_ids if self.ref_counts[b] == 0)
        return num_fresh + num_revived <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        needed = self.num_blocks_needed(seq, num_tokens)
        assert needed <= self.num_free_blocks, f"need {needed}, have {self.num_free_blocks}"
        for _ in range(needed):
            # The least recently freed block: its cached KV is the least likely to be hit.
            block_id, _ = self.free_block_ids.popitem(last=False)
            assert self.ref_counts[block_id] == 0, f"block {block_id} free but referenced"
            self._uncache(block_id)  # its KV is about to be overwritten
            self.ref_counts[block_id] = 1
            seq.block_table.append(block_id)

    def free(self, seq: Sequence) -> None:
        # Reverse order puts a sequence's tail blocks ahead of its head in the free list, so
        # they are evicted first: a longer prefix is useless without its head.
        for block_id in reversed(seq.block_table[seq.num_released_blocks :]):
            self._release(block_id)
        seq.block_table.clear()
        seq.num_released_blocks = 0
        assert self.num_free_blocks <= self.num_blocks

    def release_outside_window(self, seq: Sequence) -> None:
        """Give back seq's blocks that lie wholly before the sliding window of its next token
        (at position num_computed_tokens, which sees the window's tokens up to itself); later
        tokens see even less. Call after num_computed_tokens advances (and after
        cache_computed_blocks, so that they stay cached)."""
        if not self.sliding_window:
            return
        first_seen = seq.num_computed_tokens - self.sliding_window + 1
        num_outside = max(0, first_seen // self.block_size)
        while seq.num_released_blocks < num_outside:
            self._release(seq.block_table[seq.num_released_blocks])
            seq.num_released_blocks += 1

    def _release(self, block_id: int) -> None:
        assert self.ref_counts[block_id] > 0, f"double free of block {block_id}"
        self.ref_counts[block_id] -= 1
        if self.ref_counts[block_id] == 0:
            self.free_block_ids[block_id] = None  # keeps its hash: cached, evictable

    def check_invariants(self) -> None:
        """O(num_blocks) consistency check, for tests and debugging."""
        assert all(r >= 0 for r in self.ref_counts)
        free = set(self.free_block_ids)
        used = {b for b, r in enumerate(self.ref_counts) if r > 0}
        assert not free & used, "a referenced block is in the free list"
        assert len(free) + len(used) == self.num_blocks, "a block is neither free nor used"
        for block_id, (block_hash, key) in enumerate(
            zip(self.block_hashes, self.block_keys, strict=True)
        ):
            assert (block_hash is None) == (key is None), f"block {block_id}: hash without key"
        for block_hash, block_id in self.cached_block_ids.items():
            key = self.block_keys[block_id]
            assert self.block_hashes[block_id] == block_hash, f"entry for {block_id} is stale"
            assert key is not None and hash_block(*key) == block_hash, f"{block_id}: wrong key"
        if not self.enable_prefix_caching:
            assert not self.cached_block_ids and all(h is None for h in self.block_hashes)
