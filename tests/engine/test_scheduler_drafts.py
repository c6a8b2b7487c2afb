"""The scheduler with speculative drafts: a decode with drafts is scheduled as one chunk of
1 + drafts tokens (within the budget and the free memory), and postprocess keeps the accepted
drafts plus the model's token, cuts at a stop, and counts acceptance. No torch."""

from __future__ import annotations

from scheduler_fakes import EOS, make_scheduler

from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerOutput
from engine.sequence import Sequence, SequenceStatus


def decoding(sched: Scheduler, request_id: str, num_prompt_tokens: int = 6, **params) -> Sequence:
    """A sequence past its prefill (one output token, which is the one uncomputed token).
    Sequences already running decode a token 7 meanwhile."""
    seq = Sequence(request_id, list(range(100, 100 + num_prompt_tokens)), SamplingParams(**params))
    sched.add(seq)
    out = sched.schedule()
    sched.postprocess(out, {s.seq_id: [7] for s in out.seqs})
    assert seq.num_uncomputed_tokens == 1
    return seq


def scheduled(out: SchedulerOutput) -> dict[str, int]:
    return {seq.request_id: n for seq, n in zip(out.seqs, out.num_new_tokens, strict=True)}


def test_a_decode_with_drafts_is_one_chunk_and_accepted_drafts_become_computed() -> None:
    sched = make_scheduler(block_size=4)
    seq = decoding(sched, "a", max_tokens=20)
    assert seq.num_tokens == 7 and len(seq.block_table) == 2
    seq.spec_token_ids = [11, 12, 13]
    out = sched.schedule()
    assert scheduled(out) == {"a": 4}
    # Blocks for the drafts' KV too: positions 6..9.
    assert len(seq.block_table) == 3
    # The model agreed with 11 and 12, then chose 20 instead of 13.
    received = sched.postprocess(out, {seq.seq_id: [11, 12, 20]})
    assert received == [seq]
    assert seq.output_token_ids == [7, 11, 12, 20]
    assert seq.num_computed_tokens == 9 == seq.num_tokens - 1
    assert seq.spec_token_ids == []
    assert out.num_generated_tokens == 3 and out.draft_acceptance == [(3, 2)]
    # The verified tokens' full blocks are prefix-cached; the rejected draft's slot is not.
    bm = sched.block_manager
    assert [bm.block_hashes[b] is not None for b in seq.block_table] == [True, True, False]
    bm.check_invariants()
    # Next step: a plain decode again.
    out = sched.schedule()
    assert scheduled(out) == {"a": 1}


def test_drafts_are_cut_to_the_token_budget() -> None:
    sched = make_scheduler(block_size=4, max_num_batched_tokens=6)
    a = decoding(sched, "a", max_tokens=20)
    b = decoding(sched, "b", num_prompt_tokens=5, max_tokens=20)
    a.spec_token_ids, b.spec_token_ids = [31, 32, 33], [34, 35, 36]
    out = sched.schedule()
    assert scheduled(out) == {"a": 4, "b": 2}
    assert b.spec_token_ids == [34]
    sched.postprocess(out, {a.seq_id: [31, 32, 33, 9], b.seq_id: [8]})
    assert a.output_token_ids == [7, 7, 31, 32, 33, 9] and b.output_token_ids == [7, 8]
    assert out.draft_acceptance == [(3, 3), (1, 0)]


def test_drafts_are_dropped_before_anyone_is_preempted() -> None:
    # 2 blocks of 4: the sequence holds both (7 tokens); its drafts would need a third.
    sched = make_scheduler(num_blocks=2, block_size=4, max_model_len=8)
    seq = decoding(sched, "a", max_tokens=5)
    seq.spec_token_ids = [31, 32, 33, 34, 35]
    out = sched.schedule()
    assert scheduled(out) == {"a": 1} and not out.preempted
    assert seq.spec_token_ids == []


def test_a_stop_inside_the_accepted_drafts_cuts_the_rest() -> None:
    sched = make_scheduler(block_size=4)
    seq = decoding(sched, "a", max_tokens=20)
    seq.spec_token_ids = [11, EOS, 13]
    out = sched.schedule()
    sched.postprocess(out, {seq.seq_id: [11, EOS, 13, 14]})
    assert seq.output_token_ids == [7, 11, EOS]
    assert seq.is_finished and seq.finish_reason == "stop"
    assert out.num_generated_tokens == 2 and out.draft_acceptance == [(3, 3)]
    assert sched.block_manager.num_free_blocks == 64
    sched.block_manager.check_invariants()


def test_max_tokens_inside_the_accepted_drafts_cuts_the_rest() -> None:
    sched = make_scheduler(block_size=4)
    seq = decoding(sched, "a", max_tokens=3)
    seq.spec_token_ids = [11, 12]
    out = sched.schedule()
    sched.postprocess(out, {seq.seq_id: [11, 12, 13]})
    assert seq.output_token_ids == [7, 11, 12]
    assert seq.finish_reason == "length"


def test_preemption_forgets_drafts() -> None:
    sched = make_scheduler(
        num_blocks=4, block_size=4, max_model_len=16, enable_prefix_caching=False
    )
    a = decoding(sched, "a", num_prompt_tokens=7, max_tokens=20)  # 8 tokens: 2 blocks
    b = decoding(sched, "b", num_prompt_tokens=7, max_tokens=20)  # 2 blocks: the cache is full
    b.spec_token_ids = [31, 32]
    a.spec_token_ids = [33]
    out = sched.schedule()  # a needs a third block: b, the youngest, is preempted
    assert out.preempted == [b] and b.status is SequenceStatus.WAITING
    assert b.spec_token_ids == [] and b.num_computed_tokens == 0
