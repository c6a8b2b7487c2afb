"""Records the engine's Prometheus metrics and the one log line per finished request."""

from __future__ import annotations

import logging
import time
from typing import Any

from observability import metrics as m

logger = logging.getLogger("lumen.requests")


class EngineStats:
    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._last_token_time: dict[int, float] = {}  # seq_id -> when its last token came out
        labels = (model_name,)
        self._running = m.NUM_REQUESTS_RUNNING.labels(*labels)
        self._waiting = m.NUM_REQUESTS_WAITING.labels(*labels)
        self._kv_usage = m.KV_CACHE_USAGE.labels(*labels)
        self._preemptions = m.NUM_PREEMPTIONS.labels(*labels)
        self._prompt_tokens = m.PROMPT_TOKENS.labels(*labels)
        self._generation_tokens = m.GENERATION_TOKENS.labels(*labels)
        self._ttft = m.TIME_TO_FIRST_TOKEN.labels(*labels)
        self._itl = m.INTER_TOKEN_LATENCY.labels(*labels)
        self._e2e = m.E2E_REQUEST_LATENCY.labels(*labels)
        self._prefix_queries = m.PREFIX_CACHE_QUERIES.labels(*labels)
        self._prefix_hits = m.PREFIX_CACHE_HITS.labels(*labels)
        self._last_prefix_counts = (0, 0)

    def on_tokens(self, seqs: list[Any], num_preempted: int) -> None:
        """After a step: `seqs` are the sequences that received a token (engine.sequence)."""
        now = time.monotonic()
        self._preemptions.inc(num_preempted)
        self._generation_tokens.inc(len(seqs))
        for seq in seqs:
            last = self._last_token_time.get(seq.seq_id)
            if last is None:
                self._prompt_tokens.inc(seq.num_prompt_tokens)
                self._ttft.observe(now - seq.arrival_time)
            else:
                self._itl.observe(now - last)
            self._last_token_time[seq.seq_id] = now

    def on_finished(self, seq: Any) -> None:
        now = time.monotonic()
        self._last_token_time.pop(seq.seq_id, None)
        e2e = now - seq.arrival_time
        self._e2e.observe(e2e)
        m.REQUEST_SUCCESS.labels(self.model_name, seq.finish_reason).inc()
        ttft = (seq.first_token_time - seq.arrival_time) if seq.first_token_time else None
        logger.info(
            "request %s finished: %s, prompt_tokens=%d generation_tokens=%d ttft=%s e2e=%.3fs",
            seq.request_id,
            seq.finish_reason,
            seq.num_prompt_tokens,
            seq.num_output_tokens,
            "-" if ttft is None else f"{ttft:.3f}s",
            e2e,
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
        self._kv_usage.set(kv_usage)
