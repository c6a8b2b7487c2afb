"""One request's tokens and bookkeeping as the scheduler sees it. Plain Python, no torch."""

from __future__ import annotations

import enum
import itertools
import time

from engine.sampling_params import SamplingParams

# Process-wide so that seq ids stay unique across schedulers; the model runner keys on them.
_seq_counter = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


class Sequence:
    """Prompt + output token ids, how many of them have KV in the cache, and where it lives.

    Identity matters (queues remove by identity), so this is a plain class with default eq.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
    ) -> None:
        assert prompt_token_ids, "a sequence needs at least one prompt token"
        self.seq_id: int = next(_seq_counter)
        self.request_id = request_id
        # A copy: the caller's list must not grow when we append outputs.
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        # Tokens whose KV is already in the cache; the rest are fed to the model next.
        self.num_computed_tokens: int = 0
        self.block_table: list[int] = []
        # Speculative decoding: tokens guessed to follow token_ids, to be checked by the model
        # in this sequence's next step (only while it decodes, so its one uncomputed token is
        # the last). Not part of token_ids until verified; their KV counts only then.
        self.spec_token_ids: list[int] = []
        # Leading blocks given back because they fell out of a sliding window: their entries
        # in block_table are stale (no kernel reads them) and they are not this sequence's.
        self.num_released_blocks: int = 0
        # Prompt tokens whose KV came from the prefix cache at the first admission (usage).
        self.num_cached_tokens: int = 0
        # Chain hashes of the full blocks of token_ids, filled lazily by the block manager.
        # They depend on the tokens alone, so they outlive preemption.
        self.block_hashes: list[int] = []
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"
        self.stop_reason: str | int | None = None  # the stop string or token id that matched
        # time.monotonic() stamps for the latency metrics (observability/engine_stats.py).
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.finished_time: float | None = None  # set with the finish reason, aborts included
        self.num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def append_token(self, token_id: int) -> None:
        assert not self.is_finished, f"append to finished sequence {self.seq_id}"
        self.token_ids.append(token_id)

    def __repr__(self) -> str:
        return (
            f"Sequence(seq_id={self.seq_id}, request_id={self.request_id!r}, "
            f"status={self.status.name}, num_tokens={self.num_tokens}, "
            f"num_computed_tokens={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
