"""Which sequences run each step, and how many of their tokens. Plain Python, no torch.

vLLM-v1-style unified scheduling: a scheduled sequence gets `num_new_tokens` of its
uncomputed tokens this step (1 for a decode, all or part of the prompt for a prefill), so one
step can mix decodes with prefill chunks under a single token budget.
"""

from __future__ import annotations

import time
from collections import deque

import attrs

from engine.block_manager import BlockManager
from engine.sequence import Sequence, SequenceStatus


@attrs.define
class SchedulerOutput:
    seqs: list[Sequence] = attrs.field(factory=list)
    num_new_tokens: list[int] = attrs.field(factory=list)  # parallel to seqs
    preempted: list[Sequence] = attrs.field(factory=list)
    # Filled by postprocess: tokens the sequences received, and per sequence whose drafts
    # were checked, (drafts checked, drafts accepted).
    num_generated_tokens: int = 0
    draft_acceptance: list[tuple[int, int]] = attrs.field(factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: frozenset[int],
        long_prefill_token_threshold: int = 0,
    ) -> None:
        """long_prefill_token_threshold > 0 (vLLM's): no sequence computes more than this many
        tokens in one step, so several long prompts share a step's budget and the decodes in
        it wait less; 0: only max_num_batched_tokens limits a chunk."""
        assert max_num_seqs > 0 and max_num_batched_tokens > 0 and max_model_len > 0
        # One sequence of max_model_len tokens must fit alone in the cache; otherwise it would
        # preempt itself forever.
        max_blocks_per_seq = -(-max_model_len // block_manager.block_size)
        if max_blocks_per_seq > block_manager.num_blocks:
            raise ValueError(
                f"max_model_len={max_model_len} needs {max_blocks_per_seq} KV blocks, "
                f"the cache has {block_manager.num_blocks}"
            )
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.long_prefill_token_threshold = long_prefill_token_threshold
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: the last is the youngest
        self._by_request_id: dict[str, Sequence] = {}

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add(self, seq: Sequence) -> None:
        assert seq.status is SequenceStatus.WAITING and not seq.block_table
        assert seq.request_id not in self._by_request_id, f"duplicate {seq.request_id!r}"
        # The caller rejects longer prompts; past this the capacity check above means nothing.
        assert seq.num_tokens <= self.max_model_len, "prompt longer than max_model_len"
        self._by_request_id[seq.request_id] = seq
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        seq = self._by_request_id.get(request_id)
        if seq is None:
            return None
        self._finish(seq, "abort", None)
        return seq

    def finish(self, seq: Sequence, reason: str, stop_reason: str | int | None = None) -> None:
        """Finish a sequence for a reason found outside (a stop string in the detokenizer)."""
        if not seq.is_finished:
            self._finish(seq, reason, stop_reason)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens

        # a) Running sequences first, oldest first: decodes never wait behind new prefills.
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = min(self._chunk(seq.num_uncomputed_tokens + len(seq.spec_token_ids)), budget)
            assert num_new > 0, f"running {seq} has nothing to compute"
            needed = seq.num_computed_tokens + num_new
            if seq.spec_token_ids and not self.block_manager.can_allocate(seq, needed):
                num_new, needed = 1, seq.num_computed_tokens + 1  # memory first, drafts never
            # The drafts that fit the budget are this step's: verified with the last token.
            del seq.spec_token_ids[num_new - 1 :]
            while not self.block_manager.can_allocate(seq, needed):
                # Victims come from the tail, which is past i: never one scheduled this step.
                victim = self.running.pop()
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break  # it preempted itself, and it was the last in running
            self.block_manager.allocate(seq, needed)
            out.seqs.append(seq)
            out.num_new_tokens.append(num_new)
            budget -= num_new
            i += 1

        # b) Admit waiting sequences FCFS, unless memory was short enough to preempt: then
        # admitting would only thrash.
        if not out.preempted:
            while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
                seq = self.waiting[0]
                # A waiting sequence holds no blocks (new or preempted): its longest cached
                # prefix is shared, and only the rest is computed and charged to the budget.
                assert seq.num_computed_tokens == 0 and not seq.block_table
                cached = self.block_manager.find_cached_blocks(seq)
                num_cached = len(cached) * self.block_manager.block_size
                num_new = min(self._chunk(seq.num_tokens - num_cached), budget)
                needed = num_cached + num_new
                if not self.block_manager.can_allocate(seq, needed, cached):
                    break  # FCFS: younger requests don't overtake the head
                seq.num_computed_tokens = self.block_manager.allocate_prefix(seq, cached)
                self.block_manager.allocate(seq, needed)
                self.waiting.popleft()
                seq.status = SequenceStatus.RUNNING
                if seq.first_scheduled_time is None:
                    # Usage reports the prompt's cached tokens, so a re-admission (whose hits
                    # may include outputs) leaves the first count alone, as in vLLM.
                    seq.num_cached_tokens = num_cached
                    seq.first_scheduled_time = time.monotonic()
                self.running.append(seq)
                out.seqs.append(seq)
                out.num_new_tokens.append(num_new)
                budget -= num_new

        assert budget >= 0
        assert len({s.seq_id for s in out.seqs}) == len(out.seqs), "scheduled twice"
        return out

    def _chunk(self, uncomputed: int) -> int:
        """Of a sequence's uncomputed tokens, those one step may take (before the budget)."""
        threshold = self.long_prefill_token_threshold
        return threshold if 0 < threshold < uncomputed else uncomputed

    def postprocess(self, output: SchedulerOutput, sampled: dict[int, list[int]]) -> list[Sequence]:
        """Advance counters, append sampled tokens, apply stop conditions.

        `sampled` maps seq_id to the new tokens of sequences whose step reached the end of
        their known tokens: one, or with drafts the accepted drafts and then the model's own
        token. Returns the sequences that received tokens (finished or not).
        """
        assert sampled.keys() <= {s.seq_id for s in output.seqs}, "sampled an unscheduled seq"
        received: list[Sequence] = []
        now = time.monotonic()  # the step's tokens all come out together
        for seq, num_new in zip(output.seqs, output.num_new_tokens, strict=True):
            if seq.is_finished:
                continue  # aborted between schedule and postprocess
            drafts, seq.spec_token_ids = seq.spec_token_ids, []
            seq.num_computed_tokens += num_new - len(drafts)  # the drafts' KV: once verified
            assert seq.num_computed_tokens <= seq.num_tokens
            tokens = sampled.get(seq.seq_id)
            stop = None
            if tokens is not None:
                assert seq.num_computed_tokens == seq.num_tokens, f"sampled mid-prefill {seq}"
                assert tokens[:-1] == drafts[: len(tokens) - 1], "kept a rejected draft"
                stop = self._first_stop(seq, tokens)
                kept = tokens if stop is None else tokens[: stop[0]]
                seq.token_ids += kept
                output.num_generated_tokens += len(kept)
                if drafts:
                    output.draft_acceptance.append((len(drafts), len(tokens) - 1))
                # The accepted drafts' KV was written this step; the last token's is next.
                seq.num_computed_tokens = seq.num_tokens - 1
                seq.last_token_time = now
                if seq.first_token_time is None:
                    seq.first_token_time = now
                received.append(seq)
            # Their KV is written now: full blocks become hits for later requests, before a
            # stop below frees them (so a multi-turn chat reuses the generated text too).
            self.block_manager.cache_computed_blocks(seq)
            self.block_manager.release_outside_window(seq)
            if stop is not None:
                self._finish(seq, stop[1], stop[2])
        return received

    def _first_stop(self, seq: Sequence, tokens: list[int]) -> tuple[int, str, int | None] | None:
        """Where the first of these new tokens that ends the sequence is: (how many tokens to
        keep, finish reason, stop reason), or None when all are kept and it goes on."""
        params = seq.params
        for kept, token_id in enumerate(tokens, start=1):
            if token_id in params.stop_token_ids:
                return kept, "stop", token_id
            if not params.ignore_eos and token_id in self.eos_token_ids:
                return kept, "stop", None
            if seq.num_output_tokens + kept >= params.max_tokens:
                return kept, "length", None
            if seq.num_tokens + kept >= self.max_model_len:
                return kept, "length", None
        return None

    def _preempt(self, seq: Sequence) -> None:
        # Recompute, not swap: drop the KV and re-prefill prompt + outputs when readmitted.
        # Shared blocks just lose a reference, and its own stay cached: readmission may hit them.
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.spec_token_ids = []
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)  # it was admitted before everything still waiting

    def _finish(self, seq: Sequence, reason: str, stop_reason: str | int | None) -> None:
        assert not seq.is_finished
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finished_time = time.monotonic()
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        del self._by_request_id[seq.request_id]
