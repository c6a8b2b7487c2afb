from __future__ import annotations

import pytest

from engine.block_manager import BlockManager
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence


def make_seq(num_prompt_tokens: int = 4) -> Sequence:
    return Sequence("r", list(range(num_prompt_tokens)), SamplingParams(max_tokens=8))


def test_blocks_needed_is_ceil_division_minus_held_blocks() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq()
    assert bm.num_blocks_needed(seq, 0) == 0
    assert bm.num_blocks_needed(seq, 1) == 1
    assert bm.num_blocks_needed(seq, 4) == 1
    assert bm.num_blocks_needed(seq, 5) == 2
    bm.allocate(seq, 5)
    assert len(seq.block_table) == 2
    assert bm.num_blocks_needed(seq, 8) == 0
    assert bm.num_blocks_needed(seq, 3) == 0  # never negative
    assert bm.num_blocks_needed(seq, 9) == 1


def test_allocate_grows_block_table_and_free_returns_every_block() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    seq = make_seq()
    bm.allocate(seq, 3)
    bm.allocate(seq, 4)  # already covered: no new block
    assert seq.block_table == [0, 1]
    bm.allocate(seq, 5)
    assert seq.block_table == [0, 1, 2]
    assert all(bm.ref_counts[b] == 1 for b in seq.block_table)
    bm.check_invariants()
    bm.free(seq)
    assert seq.block_table == []
    assert bm.num_free_blocks == 4
    bm.check_invariants()


def test_free_puts_tail_blocks_first_in_line_for_reuse() -> None:
    bm = BlockManager(num_blocks=3, block_size=1)
    seq = make_seq()
    bm.allocate(seq, 3)
    bm.free(seq)
    other = make_seq()
    bm.allocate(other, 3)
    assert other.block_table == [2, 1, 0]


def test_usage_is_fraction_of_blocks_in_use() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    assert bm.usage == 0.0
    a, b = make_seq(), make_seq()
    bm.allocate(a, 2)
    assert bm.usage == 0.25
    bm.allocate(b, 6)
    assert bm.usage == 1.0
    assert bm.num_free_blocks == 0
    bm.free(a)
    assert bm.usage == 0.75


def test_can_allocate_refuses_beyond_free_blocks_and_allocate_asserts() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = make_seq()
    assert bm.can_allocate(seq, 8)
    assert not bm.can_allocate(seq, 9)
    with pytest.raises(AssertionError):
        bm.allocate(seq, 9)
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_double_free_asserts() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = make_seq()
    bm.allocate(seq, 4)
    table = list(seq.block_table)
    bm.free(seq)
    seq.block_table = table  # a stale copy of the table, freed again
    with pytest.raises(AssertionError, match="double free"):
        bm.free(seq)


def test_free_of_empty_block_table_is_a_no_op() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    bm.free(make_seq())
    assert bm.num_free_blocks == 2
    bm.check_invariants()


def test_a_sliding_window_gives_back_the_blocks_no_later_token_sees() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, sliding_window=6)
    seq = make_seq(17)
    bm.allocate(seq, 14)  # a prompt chunk
    seq.num_computed_tokens = 14
    bm.cache_computed_blocks(seq)
    bm.release_outside_window(seq)
    # The next token (position 14) sees positions 9 to 14: blocks 0 (0-3) and 1 (4-7) are
    # behind every later window, block 2 (8-11) is not.
    assert seq.num_released_blocks == 2
    assert bm.num_free_blocks == 6
    bm.check_invariants()
    # Released, they stay cached: the same prompt again hits its whole prefix.
    assert bm.find_cached_blocks(make_seq(14)) == seq.block_table[:3]
    bm.allocate(seq, 17)  # the rest: a fifth block, then the window passes block 2
    seq.num_computed_tokens = 16
    bm.cache_computed_blocks(seq)
    bm.release_outside_window(seq)
    assert seq.num_released_blocks == 2  # position 16 still sees 11
    seq.num_computed_tokens = 17
    bm.cache_computed_blocks(seq)
    bm.release_outside_window(seq)
    assert seq.num_released_blocks == 3
    bm.check_invariants()
    bm.free(seq)
    assert (bm.num_free_blocks, seq.num_released_blocks, seq.block_table) == (8, 0, [])
    bm.check_invariants()


def test_without_a_window_every_block_is_held_to_the_end() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(14)
    bm.allocate(seq, 14)
    seq.num_computed_tokens = 14
    bm.release_outside_window(seq)
    assert seq.num_released_blocks == 0 and bm.num_free_blocks == 4
