"""Automatic prefix caching: the block manager's hash chain, sharing and LRU, and the scheduler."""

from __future__ import annotations

import pytest
from scheduler_fakes import TOKEN, make_scheduler

import engine.block_manager as block_manager_module
from engine.block_manager import BlockManager
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerOutput
from engine.sequence import Sequence, SequenceStatus


def make_seq(request_id: str, prompt: list[int], max_tokens: int = 16) -> Sequence:
    return Sequence(request_id, prompt, SamplingParams(max_tokens=max_tokens))


def step(sched: Scheduler, token: int = TOKEN) -> SchedulerOutput:
    out = sched.schedule()
    sampled = {
        seq.seq_id: [token]
        for seq, n in zip(out.seqs, out.num_new_tokens, strict=True)
        if seq.num_computed_tokens + n == seq.num_tokens
    }
    sched.postprocess(out, sampled)
    sched.block_manager.check_invariants()
    return out


def scheduled(out: SchedulerOutput) -> dict[str, int]:
    return {seq.request_id: n for seq, n in zip(out.seqs, out.num_new_tokens, strict=True)}


def prefill(bm: BlockManager, seq: Sequence) -> int:
    """Admit seq and compute all its tokens, as scheduler + runner would; returns hit blocks."""
    cached = bm.find_cached_blocks(seq)
    assert bm.can_allocate(seq, seq.num_tokens, cached)
    seq.num_computed_tokens = bm.allocate_prefix(seq, cached)
    bm.allocate(seq, seq.num_tokens)
    seq.num_computed_tokens = seq.num_tokens
    bm.cache_computed_blocks(seq)
    bm.check_invariants()
    return len(cached)


PROMPT_10 = list(range(100, 110))  # 2 full blocks of 4 and 2 tokens


def test_same_prompt_shares_its_full_computed_blocks() -> None:
    sched = make_scheduler()
    a = make_seq("a", PROMPT_10)
    sched.add(a)
    step(sched)
    b = make_seq("b", PROMPT_10)
    sched.add(b)
    out = step(sched)
    # 2 full blocks hit (8 tokens); only the last 2 prompt tokens run.
    assert scheduled(out) == {"a": 1, "b": 2}
    assert b.num_cached_tokens == 8 and a.num_cached_tokens == 0
    assert b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] != a.block_table[2]
    assert [sched.block_manager.ref_counts[x] for x in b.block_table] == [2, 2, 1]
    assert b.output_token_ids == [TOKEN]


def test_fully_cached_block_aligned_prompt_recomputes_its_last_block() -> None:
    sched = make_scheduler()
    prompt = list(range(100, 108))  # exactly 2 blocks
    a = make_seq("a", prompt)
    sched.add(a)
    step(sched)
    b = make_seq("b", prompt)
    sched.add(b)
    out = step(sched)
    # Both blocks are cached, but one token must run: the last block goes into a fresh one.
    assert scheduled(out)["b"] == 4 and b.num_cached_tokens == 4
    assert b.block_table[0] == a.block_table[0]
    assert b.block_table[1] not in a.block_table
    assert b.output_token_ids == [TOKEN]


def test_single_block_prompt_is_never_cached() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    prefill(bm, make_seq("a", [1, 2, 3, 4]))
    assert bm.find_cached_blocks(make_seq("b", [1, 2, 3, 4])) == []
    assert bm.find_cached_blocks(make_seq("c", [1, 2, 3, 4, 5])) != []


def test_freeing_one_sharer_keeps_the_block_for_the_other() -> None:
    sched = make_scheduler()
    a, b = make_seq("a", PROMPT_10), make_seq("b", PROMPT_10)
    sched.add(a)
    step(sched)
    sched.add(b)
    step(sched)
    shared = b.block_table[:2]
    sched.abort("a")
    bm = sched.block_manager
    assert all(bm.ref_counts[x] == 1 and x not in bm.free_block_ids for x in shared)
    assert b.block_table[:2] == shared
    for _ in range(3):
        assert scheduled(step(sched)) == {"b": 1}
    assert b.block_table[:2] == shared


def test_finished_request_blocks_stay_cached_and_are_reused() -> None:
    sched = make_scheduler()
    a = make_seq("a", PROMPT_10, max_tokens=1)
    sched.add(a)
    step(sched)
    assert a.is_finished
    bm = sched.block_manager
    assert bm.usage == 0.0 and bm.num_free_blocks == 64
    assert len(bm.cached_block_ids) == 2
    b = make_seq("b", PROMPT_10 + [1, 2])
    sched.add(b)
    out = step(sched)
    assert scheduled(out) == {"b": 4} and b.num_cached_tokens == 8


def test_multi_turn_prompt_hits_the_generated_blocks_too() -> None:
    sched = make_scheduler()
    a = make_seq("a", list(range(100, 106)), max_tokens=8)
    while not a.is_finished:
        if a.status is SequenceStatus.WAITING and a not in sched.waiting:
            sched.add(a)
        step(sched)
    # 14 tokens, 13 computed (the last sample never ran): 3 full blocks are cached.
    assert a.num_tokens == 14
    b = make_seq("b", a.token_ids + [1, 2])  # previous prompt + answer + the next turn
    sched.add(b)
    out = step(sched)
    assert b.num_cached_tokens == 12 > a.num_prompt_tokens  # hits cover generated tokens
    assert scheduled(out) == {"b": 4}


def test_lru_evicts_the_least_recently_freed_cached_block_and_drops_its_hash() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a, b = make_seq("a", [1, 2]), make_seq("b", [3, 4])
    prefill(bm, a)
    prefill(bm, b)
    a_block, b_block = a.block_table[0], b.block_table[0]
    bm.free(a)
    bm.free(b)  # b is freed after a: more recently used
    assert len(bm.cached_block_ids) == 2
    new = make_seq("new", [9, 9, 9, 9, 9, 9])  # 3 blocks of new data, 2 free uncached
    bm.allocate(new, 6)
    assert a_block in new.block_table and b_block not in new.block_table
    assert a_block not in bm.cached_block_ids.values()
    assert bm.block_hashes[a_block] is None
    assert bm.find_cached_blocks(make_seq("a2", [1, 2, 0])) == []
    assert bm.find_cached_blocks(make_seq("b2", [3, 4, 0])) == [b_block]
    bm.check_invariants()


def test_free_evicts_a_prefix_tail_before_its_head() -> None:
    bm = BlockManager(num_blocks=3, block_size=2)
    a = make_seq("a", [1, 2, 3, 4, 5, 6])
    prefill(bm, a)
    head, middle, tail = a.block_table
    bm.free(a)
    new = make_seq("new", [9, 9])
    bm.allocate(new, 2)
    assert new.block_table == [tail]
    assert bm.find_cached_blocks(make_seq("a2", [1, 2, 3, 4, 5, 6, 0])) == [head, middle]


def test_hash_collision_never_shares_another_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(block_manager_module, "hash_block", lambda parent, tokens: 42)
    bm = BlockManager(num_blocks=8, block_size=2)
    a = make_seq("a", [1, 2, 3, 4, 5])
    prefill(bm, a)
    # Every block hashes to 42: the stored key tells them apart.
    assert bm.find_cached_blocks(make_seq("b", [9, 9, 3, 4, 5])) == []
    assert bm.find_cached_blocks(make_seq("c", [1, 2, 3, 4, 5])) == [a.block_table[0]]
    b = make_seq("b", [9, 9, 3, 4, 5])
    assert prefill(bm, b) == 0
    assert not set(a.block_table) & set(b.block_table)


def test_usage_returns_to_zero_when_nothing_runs() -> None:
    sched = make_scheduler(num_blocks=16)
    seqs = [make_seq(f"r{i}", PROMPT_10 + [i] * i, max_tokens=4) for i in range(4)]
    for seq in seqs:
        sched.add(seq)
    while sched.has_work:
        step(sched)
        assert 0.0 < sched.block_manager.usage <= 1.0 or not sched.has_work
    bm = sched.block_manager
    assert bm.usage == 0.0 and bm.num_free_blocks == 16
    assert bm.cached_block_ids  # capacity is free, the KV is still cached


def test_counters_count_queried_and_hit_tokens() -> None:
    sched = make_scheduler()
    sched.add(make_seq("a", PROMPT_10))
    step(sched)
    sched.add(make_seq("b", PROMPT_10))
    step(sched)
    bm = sched.block_manager
    assert bm.num_queried_tokens == 20 and bm.num_hit_tokens == 8


def test_disabled_prefix_caching_never_shares() -> None:
    sched = make_scheduler(enable_prefix_caching=False)
    a, b = make_seq("a", PROMPT_10), make_seq("b", PROMPT_10)
    sched.add(a)
    step(sched)
    sched.add(b)
    out = step(sched)
    assert scheduled(out) == {"a": 1, "b": 10} and b.num_cached_tokens == 0
    assert not set(a.block_table) & set(b.block_table)
    bm = sched.block_manager
    assert not bm.cached_block_ids and bm.num_queried_tokens == bm.num_hit_tokens == 0


def test_identical_prompts_admitted_together_both_compute_and_later_ones_hit() -> None:
    sched = make_scheduler()
    a, b = make_seq("a", PROMPT_10), make_seq("b", PROMPT_10)
    sched.add(a)
    sched.add(b)
    out = step(sched)
    # Nothing was computed when they were admitted: no sharing of KV not yet written.
    assert scheduled(out) == {"a": 10, "b": 10}
    assert not set(a.block_table) & set(b.block_table)
    c = make_seq("c", PROMPT_10)
    sched.add(c)
    step(sched)
    assert c.block_table[:2] == a.block_table[:2]  # the first registered serves hits


def test_only_blocks_with_computed_kv_are_cached() -> None:
    sched = make_scheduler(max_num_batched_tokens=6)
    prompt = list(range(100, 120))
    a = make_seq("a", prompt)
    sched.add(a)
    step(sched)  # 6 of 20 tokens computed: 1 full block
    assert len(sched.block_manager.cached_block_ids) == 1
    b = make_seq("b", prompt)
    assert sched.block_manager.find_cached_blocks(b) == a.block_table[:1]


def test_can_allocate_charges_hits_on_free_cached_blocks_only() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = make_seq("a", [1, 2, 3, 4, 5])
    prefill(bm, a)  # 3 blocks in use, 2 cached
    b = make_seq("b", [1, 2, 3, 4, 6])
    cached = bm.find_cached_blocks(b)
    assert cached == a.block_table[:2]
    # Hits on blocks in use cost nothing: 1 fresh block, 1 free.
    assert bm.can_allocate(b, 5, cached)
    assert not bm.can_allocate(b, 7, cached)
    bm.free(a)
    # Now the hits sit in the free list: reviving them costs a free block each.
    assert bm.can_allocate(b, 8, cached)  # 2 revived + 2 fresh = 4
    assert not bm.can_allocate(b, 9, cached)
    assert bm.allocate_prefix(b, cached) == 4
    bm.allocate(b, 8)
    assert bm.num_free_blocks == 0 and bm.usage == 1.0
    bm.check_invariants()


def test_preemption_with_shared_blocks_keeps_the_other_sequence_intact() -> None:
    sched = make_scheduler(num_blocks=5, block_size=4, max_model_len=20)
    a = make_seq("a", list(range(100, 108)), max_tokens=12)
    sched.add(a)
    step(sched)
    b = make_seq("b", a.token_ids[:8] + [1, 2], max_tokens=12)
    sched.add(b)
    step(sched)
    assert b.block_table[:2] == a.block_table[:2]
    bm = sched.block_manager
    preempted = False
    while not preempted:
        a_table = list(a.block_table)
        out = step(sched)
        preempted = b in out.preempted
    assert b.status is SequenceStatus.WAITING and b.block_table == []
    assert a.block_table[: len(a_table)] == a_table
    assert all(bm.ref_counts[x] == 1 and x not in bm.free_block_ids for x in a_table)
    hits_before = bm.num_hit_tokens
    while sched.has_work:
        step(sched)
    assert a.finish_reason == b.finish_reason == "length"
    assert a.num_output_tokens == 12 and b.num_tokens == 20  # max_tokens, max_model_len
    assert bm.num_hit_tokens > hits_before  # b's readmission hit the cache
    assert bm.usage == 0.0


def test_readmitted_sequence_hits_its_own_cached_blocks() -> None:
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=4, max_model_len=16)
    seq = make_seq("a", [100, 101, 102, 103])
    sched.add(seq)
    for _ in range(3):
        step(sched)
    assert seq.num_tokens == 7 and seq.num_computed_tokens == 6
    sched.running.remove(seq)
    sched._preempt(seq)
    out = step(sched)
    # Block 0 is cached: only tokens 4..6 run again, and a token is sampled at once.
    assert scheduled(out) == {"a": 3} and seq.num_output_tokens == 4
    assert seq.num_cached_tokens == 0  # usage reports the first admission's prompt hits


def test_reset_prefix_cache_forgets_free_blocks() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    a, b = make_seq("a", [1, 2, 3]), make_seq("b", [5, 6, 7])
    prefill(bm, a)
    prefill(bm, b)
    bm.free(a)
    assert not bm.reset_prefix_cache()  # b's block is in use and stays cached
    assert bm.find_cached_blocks(make_seq("a2", [1, 2, 3])) == []
    assert bm.find_cached_blocks(make_seq("b2", [5, 6, 7])) == b.block_table[:1]
    bm.free(b)
    assert bm.reset_prefix_cache() and not bm.cached_block_ids
    bm.check_invariants()
