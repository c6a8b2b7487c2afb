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
