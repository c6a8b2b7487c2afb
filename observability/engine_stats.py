"""Records one generation engine's Prometheus metrics (observability/metrics.py).

The async engine calls in from its loop: `on_added` when a request's sequences enter the engine,
`on_step` after each step, `on_finished` for each sequence that finished (aborts included), and
the setters after every loop iteration. Latencies are differences of the timestamps the engine
stamps on each Sequence (engine/sequence.py), so the phases add up exactly:
e2e = queue + inference and inference = prefill + decode.
"""

from __future__ import annotations

from typing import Any

import attrs

from observability import metrics as m


@attrs.define(eq=False)
class _Group:
    """The n samples of one prompt: vLLM counts them once in request_params_n."""

    n: int
    added: int = 0
    pending: int = 0
    max_generation_tokens: int = 0


class EngineStats:
    def __init__(
        self,
        model_name: str,
        *,
        max_model_len: int,
        cache_config: dict[str, str] | None = None,
        engine_index: str = "0",
        num_speculative_tokens: int = 0,
    ) -> None:
        """num_speculative_tokens: the most drafts per step (0: no speculative decoding, and
        no spec_decode series)."""
        self.model_name = model_name
        self.labels = labels = (model_name, engine_index)
        self._last_token_time: dict[int, float] = {}  # seq_id -> when its last token came out
        self._groups: dict[int, _Group] = {}  # seq_id -> its prompt's group of samples
        self._last_prefix_counts = (0, 0)
        self._running = m.NUM_REQUESTS_RUNNING.labels(*labels)
        self._waiting = m.NUM_REQUESTS_WAITING.labels(*labels)
        self._waiting_capacity = m.NUM_REQUESTS_WAITING_BY_REASON.labels(*labels, "capacity")
        self._waiting_deferred = m.NUM_REQUESTS_WAITING_BY_REASON.labels(*labels, "deferred")
        self._kv_usage = m.KV_CACHE_USAGE.labels(*labels)
        self._preemptions = m.NUM_PREEMPTIONS.labels(*labels)
        self._prefix_queries = m.PREFIX_CACHE_QUERIES.labels(*labels)
        self._prefix_hits = m.PREFIX_CACHE_HITS.labels(*labels)
        self._prompt_tokens = m.PROMPT_TOKENS.labels(*labels)
        self._prompt_computed = m.PROMPT_TOKENS_BY_SOURCE.labels(*labels, "local_compute")
        self._prompt_cache_hit = m.PROMPT_TOKENS_BY_SOURCE.labels(*labels, "local_cache_hit")
        self._prompt_cached = m.PROMPT_TOKENS_CACHED.labels(*labels)
        self._generation_tokens = m.GENERATION_TOKENS.labels(*labels)
        self._success = {
            reason: m.REQUEST_SUCCESS.labels(*labels, reason) for reason in m.FINISHED_REASONS
        }
        self._iteration_tokens = m.ITERATION_TOKENS.labels(*labels)
        self._ttft = m.TIME_TO_FIRST_TOKEN.labels(*labels)
        self._itl = m.INTER_TOKEN_LATENCY.labels(*labels)
        self._tpot = m.REQUEST_TIME_PER_OUTPUT_TOKEN.labels(*labels)
        self._e2e = m.E2E_REQUEST_LATENCY.labels(*labels)
        self._queue = m.REQUEST_QUEUE_TIME.labels(*labels)
        self._inference = m.REQUEST_INFERENCE_TIME.labels(*labels)
        self._prefill = m.REQUEST_PREFILL_TIME.labels(*labels)
        self._decode = m.REQUEST_DECODE_TIME.labels(*labels)
        self._params_n = m.REQUEST_PARAMS_N.labels(*labels)
        if num_speculative_tokens:
            self._drafts = m.SPEC_DECODE_DRAFTS.labels(*labels)
            self._draft_tokens = m.SPEC_DECODE_DRAFT_TOKENS.labels(*labels)
            self._accepted = m.SPEC_DECODE_ACCEPTED_TOKENS.labels(*labels)
            self._accepted_per_pos = [
                m.SPEC_DECODE_ACCEPTED_PER_POS.labels(*labels, str(pos))
                for pos in range(num_speculative_tokens)
            ]
        m.TOKEN_COUNTS.add_engine(labels, max_model_len)
        if cache_config is not None:
            info = dict(zip(m.ENGINE_LABELS, labels, strict=True))
            m.CACHE_CONFIG_INFO.labels(**info, **cache_config).set(1)

    def on_added(self, seqs: list[Any]) -> None:
        """One request's sequences, as added (engine.sequence.Sequence): each prompt's
        `params.n` samples are consecutive."""
        group: _Group | None = None
        for seq in seqs:
            if group is None or group.added == group.n:
                group = _Group(n=max(seq.params.n, 1))
            group.added += 1
            group.pending += 1
            self._groups[seq.seq_id] = group

    def on_step(self, step: Any, received: list[Any], num_tokens: int | None = None) -> None:
        """After a step: `step` is its SchedulerOutput (None before any), `received` the
        sequences that got tokens in it, num_tokens how many in all (default: one each)."""
        if step is not None:
            self._preemptions.inc(len(step.preempted))
            if not step.is_empty:
                self._iteration_tokens.observe(step.num_batched_tokens)
            for num_drafts, num_accepted in step.draft_acceptance:
                self._drafts.inc()
                self._draft_tokens.inc(num_drafts)
                self._accepted.inc(num_accepted)
                for pos in range(num_accepted):
                    self._accepted_per_pos[pos].inc()
        self._generation_tokens.inc(len(received) if num_tokens is None else num_tokens)
        for seq in received:
            last = self._last_token_time.get(seq.seq_id)
            if last is None:  # its first token: the prefill is complete
                cached = seq.num_cached_tokens
                self._prompt_tokens.inc(seq.num_prompt_tokens)
                self._prompt_cached.inc(cached)
                self._prompt_cache_hit.inc(cached)
                self._prompt_computed.inc(seq.num_prompt_tokens - cached)
                self._ttft.observe(seq.first_token_time - seq.arrival_time)
            else:
                self._itl.observe(seq.last_token_time - last)
            self._last_token_time[seq.seq_id] = seq.last_token_time

    def on_step_failure(self, scope: str) -> None:
        m.ENGINE_STEP_FAILURES.labels(*self.labels, scope).inc()

    def on_finished(self, seq: Any) -> None:
        """A sequence finished: stopped, hit a length limit, or aborted (its client went away).

        An aborted request observes only the phases it lived through: one aborted while
        waiting has an e2e time but no queue time.
        """
        self._last_token_time.pop(seq.seq_id, None)
        counts = m.TOKEN_COUNTS
        reason = seq.finish_reason
        success = self._success.get(reason)
        if success is None:  # a reason that is not pre-created: still counted
            success = m.REQUEST_SUCCESS.labels(*self.labels, str(reason))
        success.inc()
        arrived, scheduled = seq.arrival_time, seq.first_scheduled_time
        first_token, finished = seq.first_token_time, seq.finished_time
        self._e2e.observe(finished - arrived)
        if scheduled is not None:
            self._queue.observe(scheduled - arrived)
            self._inference.observe(finished - scheduled)
        if first_token is not None:
            assert scheduled is not None
            self._prefill.observe(first_token - scheduled)
            decode = finished - first_token
            self._decode.observe(decode)
            if seq.num_output_tokens > 1:
                self._tpot.observe(decode / (seq.num_output_tokens - 1))
            counts.observe(
                "request_prefill_kv_computed_tokens",
                self.labels,
                seq.num_prompt_tokens - seq.num_cached_tokens,
            )
        counts.observe("request_prompt_tokens", self.labels, seq.num_prompt_tokens)
        counts.observe("request_generation_tokens", self.labels, seq.num_output_tokens)
        counts.observe("request_params_max_tokens", self.labels, seq.params.max_tokens)

        # A sequence added without on_added (straight to the LLMEngine) is a group of its own.
        group = self._groups.pop(seq.seq_id, None) or _Group(n=seq.params.n, pending=1)
        group.max_generation_tokens = max(group.max_generation_tokens, seq.num_output_tokens)
        group.pending -= 1
        if group.pending == 0:
            self._params_n.observe(group.n)
            counts.observe(
                "request_max_num_generation_tokens", self.labels, group.max_generation_tokens
            )

    def set_prefix_cache_totals(self, queried_tokens: int, hit_tokens: int) -> None:
        """The block manager keeps running totals; the counters get what is new."""
        last_queried, last_hits = self._last_prefix_counts
        self._prefix_queries.inc(queried_tokens - last_queried)
        self._prefix_hits.inc(hit_tokens - last_hits)
        self._last_prefix_counts = (queried_tokens, hit_tokens)

    def set_gauges(self, num_running: int, num_waiting: int, kv_usage: float) -> None:
        self._running.set(num_running)
        self._waiting.set(num_waiting)
        # Every waiting request here waits for room (in the batch or the KV cache).
        self._waiting_capacity.set(num_waiting)
        self._waiting_deferred.set(0)
        self._kv_usage.set(kv_usage)
