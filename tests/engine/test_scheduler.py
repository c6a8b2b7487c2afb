from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scheduler_fakes import EOS, TOKEN, make_scheduler

from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerOutput
from engine.sequence import Sequence, SequenceStatus


def make_seq(
    request_id: str, num_prompt_tokens: int = 4, max_tokens: int = 16, **params: object
) -> Sequence:
    prompt = [100 + i for i in range(num_prompt_tokens)]
    return Sequence(request_id, prompt, SamplingParams(max_tokens=max_tokens, **params))


def fake_sample(out: SchedulerOutput, token: int = TOKEN) -> dict[int, list[int]]:
    """What the model runner samples: one token per sequence whose step reaches its end."""
    return {
        seq.seq_id: [token]
        for seq, n in zip(out.seqs, out.num_new_tokens, strict=True)
        if seq.num_computed_tokens + n == seq.num_tokens
    }


def step(sched: Scheduler, token: int = TOKEN) -> tuple[SchedulerOutput, list[Sequence]]:
    out = sched.schedule()
    received = sched.postprocess(out, fake_sample(out, token))
    sched.block_manager.check_invariants()
    return out, received


def scheduled(out: SchedulerOutput) -> dict[str, int]:
    return {seq.request_id: n for seq, n in zip(out.seqs, out.num_new_tokens, strict=True)}


def test_prefill_then_decode_one_token_per_step() -> None:
    sched = make_scheduler()
    seq = make_seq("a", num_prompt_tokens=5)
    sched.add(seq)
    out, received = step(sched)
    assert scheduled(out) == {"a": 5}
    assert received == [seq] and seq.output_token_ids == [TOKEN]
    assert seq.status is SequenceStatus.RUNNING and seq.first_token_time is not None
    out, _ = step(sched)
    assert scheduled(out) == {"a": 1}
    assert seq.num_computed_tokens == 6 and seq.num_tokens == 7


def test_new_request_joins_running_batch_at_next_step() -> None:
    sched = make_scheduler(enable_prefix_caching=False)  # the prompts share a prefix
    a = make_seq("a")
    sched.add(a)
    step(sched)
    b = make_seq("b", num_prompt_tokens=6)
    sched.add(b)
    out, received = step(sched)
    assert scheduled(out) == {"a": 1, "b": 6}
    assert received == [a, b]
    assert sched.running == [a, b]


def test_finished_sequence_leaves_batch_and_frees_blocks() -> None:
    sched = make_scheduler()
    a, b = make_seq("a", max_tokens=2), make_seq("b", max_tokens=5)
    sched.add(a)
    sched.add(b)
    step(sched)
    _, received = step(sched)
    assert a in received and a.is_finished and a.finish_reason == "length"
    assert a.block_table == [] and sched.running == [b]
    assert sched.block_manager.num_free_blocks == 64 - len(b.block_table)
    out, _ = step(sched)
    assert scheduled(out) == {"b": 1}


def test_long_prompt_is_chunked_under_token_budget() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    seq = make_seq("a", num_prompt_tokens=20)
    sched.add(seq)
    chunks = []
    while not seq.output_token_ids:
        out, received = step(sched)
        chunks.append(scheduled(out)["a"])
        assert out.num_batched_tokens <= 8
        # No token is sampled until the last chunk, and blocks cover only what was computed.
        assert received == ([] if seq.num_computed_tokens < 20 else [seq])
        assert len(seq.block_table) == -(-seq.num_computed_tokens // 4)
    assert chunks == [8, 8, 4]
    assert seq.num_computed_tokens == 20 and seq.num_tokens == 21


def test_long_prefill_threshold_lets_long_prompts_share_each_step() -> None:
    """vLLM's long_prefill_token_threshold: no sequence computes more than it in a step, so
    two long prompts advance together (not one after the other) beside a decode, and short
    prompts and decodes are not held back by it."""
    sched = make_scheduler(
        max_num_batched_tokens=32, long_prefill_token_threshold=6, enable_prefix_caching=False
    )  # (the prompts share a prefix)
    a = make_seq("a", num_prompt_tokens=5)  # under the threshold: whole
    sched.add(a)
    out, _ = step(sched)
    assert scheduled(out) == {"a": 5}
    long1, long2 = make_seq("b", num_prompt_tokens=14), make_seq("c", num_prompt_tokens=14)
    sched.add(long1)
    sched.add(long2)
    chunks = []
    while not long2.output_token_ids:
        out, _ = step(sched)
        chunks.append(list(scheduled(out).items()))
    assert chunks == [
        [("a", 1), ("b", 6), ("c", 6)],
        [("a", 1), ("b", 6), ("c", 6)],
        [("a", 1), ("b", 2), ("c", 2)],
    ]
    assert long1.num_computed_tokens == long2.num_computed_tokens == 14


def test_decode_is_scheduled_before_waiting_prefill() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    a = make_seq("a")
    sched.add(a)
    step(sched)
    b = make_seq("b", num_prompt_tokens=20)
    sched.add(b)
    out, _ = step(sched)
    # The decode gets its token; the new prompt takes only the rest of the budget.
    assert list(scheduled(out).items()) == [("a", 1), ("b", 7)]
    out, _ = step(sched)
    assert list(scheduled(out).items()) == [("a", 1), ("b", 7)]


def test_running_prefill_chunk_continues_before_new_admissions() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    a = make_seq("a", num_prompt_tokens=20)
    sched.add(a)
    step(sched)
    sched.add(make_seq("b", num_prompt_tokens=4))
    out, _ = step(sched)
    assert scheduled(out) == {"a": 8}  # budget spent on the running prefill
    out, _ = step(sched)
    assert scheduled(out) == {"a": 4, "b": 4}


def test_decode_preempts_youngest_when_out_of_blocks() -> None:
    # 4 blocks of 4 tokens; two sequences with 8-token prompts fill the cache exactly.
    # Without prefix caching: b would share a's cached prompt when readmitted.
    sched = make_scheduler(
        num_blocks=4, block_size=4, max_model_len=16, enable_prefix_caching=False
    )
    a, b = make_seq("a", num_prompt_tokens=8), make_seq("b", num_prompt_tokens=8)
    sched.add(a)
    sched.add(b)
    step(sched)
    assert sched.block_manager.num_free_blocks == 0
    # a's decode needs a third block: b (the youngest) is preempted by recompute.
    out, _ = step(sched)
    assert scheduled(out) == {"a": 1}
    assert out.preempted == [b]
    assert b.status is SequenceStatus.WAITING and b.num_preemptions == 1
    assert b.num_computed_tokens == 0 and b.block_table == []
    assert list(sched.waiting) == [b] and sched.running == [a]
    assert b.output_token_ids == [TOKEN]  # outputs survive preemption
    # a runs alone until it finishes; then b resumes, recomputing prompt + outputs at once.
    while not a.is_finished:
        out, _ = step(sched)
        assert "b" not in scheduled(out)
    assert a.finish_reason == "length"  # max_model_len
    out, received = step(sched)
    assert scheduled(out) == {"b": 9}  # 8 prompt + 1 output, re-prefilled in one step
    assert received == [b] and b.output_token_ids == [TOKEN, TOKEN]


def test_preempted_sequence_samples_nothing_until_it_catches_up() -> None:
    # Without prefix caching: the readmission would hit its own first block.
    sched = make_scheduler(
        num_blocks=4,
        block_size=4,
        max_num_batched_tokens=4,
        max_model_len=16,
        enable_prefix_caching=False,
    )
    seq = make_seq("a", num_prompt_tokens=4)
    sched.add(seq)
    for _ in range(3):
        step(sched)
    assert seq.num_tokens == 7 and seq.num_computed_tokens == 6
    # Preempt by hand, as the scheduler would, then replay under a small budget.
    sched.running.remove(seq)
    sched._preempt(seq)
    out, received = step(sched)
    assert scheduled(out) == {"a": 4} and received == []
    out, received = step(sched)
    assert scheduled(out) == {"a": 3} and received == [seq]
    assert seq.output_token_ids == [TOKEN] * 4


def test_preemption_blocks_new_admissions_in_the_same_step() -> None:
    sched = make_scheduler(num_blocks=4, block_size=4, max_model_len=16)
    a, b = make_seq("a", num_prompt_tokens=8), make_seq("b", num_prompt_tokens=8)
    sched.add(a)
    sched.add(b)
    step(sched)
    c = make_seq("c", num_prompt_tokens=1)
    sched.add(c)
    out, _ = step(sched)
    assert out.preempted == [b]
    assert "c" not in scheduled(out)
    assert list(sched.waiting) == [b, c]  # the preempted one goes back to the front


def test_sequence_preempts_itself_when_it_is_the_youngest() -> None:
    sched = make_scheduler(num_blocks=4, block_size=4, max_model_len=16)
    # a's decode still fits in its second block; b's needs a third, and the cache is full.
    a, b = make_seq("a", num_prompt_tokens=5), make_seq("b", num_prompt_tokens=8)
    sched.add(a)
    sched.add(b)
    step(sched)
    out, _ = step(sched)
    assert scheduled(out) == {"a": 1} and out.preempted == [b]
    assert sched.running == [a] and list(sched.waiting) == [b]


def test_abort_frees_blocks_immediately() -> None:
    sched = make_scheduler()
    running, waiting = make_seq("run"), make_seq("wait")
    sched.add(running)
    step(sched)
    sched.add(waiting)
    assert sched.block_manager.num_free_blocks < 64

    assert sched.abort("run") is running
    assert running.is_finished and running.finish_reason == "abort"
    assert running.block_table == [] and sched.running == []
    assert sched.block_manager.num_free_blocks == 64

    assert sched.abort("wait") is waiting
    assert waiting.finish_reason == "abort" and not sched.waiting
    assert not sched.has_work
    assert sched.abort("wait") is None and sched.abort("unknown") is None
    sched.block_manager.check_invariants()


def test_abort_between_schedule_and_postprocess_is_ignored() -> None:
    sched = make_scheduler()
    seq = make_seq("a")
    sched.add(seq)
    out = sched.schedule()
    sched.abort("a")
    assert sched.postprocess(out, fake_sample(out)) == []
    assert seq.output_token_ids == []


@pytest.mark.parametrize(
    ("params", "token", "reason", "stop_reason"),
    [
        ({"stop_token_ids": (9,)}, 9, "stop", 9),
        ({}, EOS, "stop", None),
        ({"stop_token_ids": (EOS,)}, EOS, "stop", EOS),  # stop ids are checked before eos
        ({"max_tokens": 1}, TOKEN, "length", None),
    ],
)
def test_stop_token_and_eos_and_max_tokens_finish_reasons(
    params: dict[str, object], token: int, reason: str, stop_reason: int | None
) -> None:
    sched = make_scheduler()
    seq = make_seq("a", **params)
    sched.add(seq)
    _, received = step(sched, token=token)
    assert received == [seq] and seq.output_token_ids == [token]
    assert seq.is_finished and seq.finish_reason == reason and seq.stop_reason == stop_reason
    assert not sched.has_work and sched.block_manager.num_free_blocks == 64


def test_max_model_len_finishes_with_length() -> None:
    sched = make_scheduler(max_model_len=6)
    seq = make_seq("a", num_prompt_tokens=4, max_tokens=100)
    sched.add(seq)
    step(sched)
    assert not seq.is_finished
    step(sched)
    assert seq.is_finished and seq.finish_reason == "length" and seq.num_tokens == 6


def test_ignore_eos() -> None:
    sched = make_scheduler()
    seq = make_seq("a", max_tokens=3, ignore_eos=True)
    sched.add(seq)
    for _ in range(2):
        step(sched, token=EOS)
        assert not seq.is_finished
    step(sched, token=EOS)
    assert seq.finish_reason == "length" and seq.output_token_ids == [EOS] * 3


def test_stop_token_ids_apply_even_with_ignore_eos() -> None:
    sched = make_scheduler()
    seq = make_seq("a", ignore_eos=True, stop_token_ids=(EOS,))
    sched.add(seq)
    step(sched, token=EOS)
    assert seq.finish_reason == "stop" and seq.stop_reason == EOS


def test_max_num_seqs_caps_running_batch() -> None:
    sched = make_scheduler(max_num_seqs=2)
    seqs = [make_seq(f"r{i}") for i in range(3)]
    for seq in seqs:
        sched.add(seq)
    out, _ = step(sched)
    assert scheduled(out) == {"r0": 4, "r1": 4}
    assert sched.num_running == 2 and sched.num_waiting == 1
    sched.abort("r0")
    out, _ = step(sched)
    assert scheduled(out) == {"r1": 1, "r2": 4}


def test_fcfs_admission_stops_at_first_that_does_not_fit() -> None:
    # 4 blocks of 4; a takes 2 blocks. b (12 tokens) needs 3 and does not fit; c (4) would,
    # but must not overtake b.
    # Without prefix caching: b would share a's blocks, since the prompts share a prefix.
    sched = make_scheduler(
        num_blocks=4, block_size=4, max_model_len=16, enable_prefix_caching=False
    )
    a, b, c = make_seq("a", 8), make_seq("b", 12), make_seq("c", 4)
    sched.add(a)
    step(sched)
    sched.add(b)
    sched.add(c)
    out, _ = step(sched)
    assert scheduled(out) == {"a": 1}
    assert list(sched.waiting) == [b, c]


def test_stop_string_finish_is_idempotent_and_frees_blocks() -> None:
    sched = make_scheduler()
    seq = make_seq("a")
    sched.add(seq)
    step(sched)
    sched.finish(seq, "stop", "###")
    assert seq.finish_reason == "stop" and seq.stop_reason == "###"
    assert seq.block_table == [] and not sched.has_work
    sched.finish(seq, "length")  # already finished: no change, no double free
    assert seq.finish_reason == "stop"
    sched.block_manager.check_invariants()


def test_cache_too_small_for_max_model_len_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        make_scheduler(num_blocks=2, block_size=4, max_model_len=9)


def test_many_requests_all_finish_under_memory_pressure() -> None:
    sched = make_scheduler(
        num_blocks=10, block_size=4, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=40
    )
    seqs = [make_seq(f"r{i}", num_prompt_tokens=3 + 2 * i, max_tokens=12) for i in range(8)]
    for seq in seqs:
        sched.add(seq)
    for _ in range(1000):
        if not sched.has_work:
            break
        out, _ = step(sched)
        assert out.num_batched_tokens <= 16 and len(out.seqs) <= 4
        assert sched.num_running <= 4
    assert not sched.has_work
    assert all(s.finish_reason == "length" and s.num_output_tokens == 12 for s in seqs)
    assert any(s.num_preemptions for s in seqs)
    assert sched.block_manager.num_free_blocks == 10


def test_scheduler_does_not_import_torch() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys, engine.scheduler; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
