"""How much work one model has accepted and not finished, and whether it takes more.

Work is counted as sequences (a request's prompts x n) and prompt tokens, not requests: one
request with 64 samples of a long prompt weighs what it costs. Past either limit a request is
refused (429) instead of queued, so the queue, and the memory it holds, stays bounded. A model
with nothing in flight takes any request the per-request caps allowed, so a large request
waits for a quiet moment instead of being refused forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs

from engine.errors import EngineOverloadedError, EngineSleepingError


@attrs.define
class Admission:
    model: str
    max_sequences: int | None = None  # None: no limit
    max_tokens: int | None = None
    num_sequences: int = 0
    num_tokens: int = 0
    asleep: bool = False  # the model sleeps (POST /sleep): every request is refused

    def admits(self, num_sequences: int, num_tokens: int) -> bool:
        if self.num_sequences == 0:
            return True
        return (
            self.max_sequences is None or self.num_sequences + num_sequences <= self.max_sequences
        ) and (self.max_tokens is None or self.num_tokens + num_tokens <= self.max_tokens)

    def check(self, num_sequences: int, num_tokens: int) -> None:
        if self.asleep:
            raise EngineSleepingError(
                f"The model `{self.model}` is asleep (POST /sleep); POST /wake_up to serve it."
            )
        if not self.admits(num_sequences, num_tokens):
            raise EngineOverloadedError(
                f"The model `{self.model}` is at capacity ({self.num_sequences} sequences, "
                f"{self.num_tokens} prompt tokens running or queued); retry later."
            )

    @contextlib.contextmanager
    def hold(self, num_sequences: int, num_tokens: int) -> Iterator[None]:
        """Counts the work in for the block's duration, or raises EngineOverloadedError."""
        self.check(num_sequences, num_tokens)
        self.num_sequences += num_sequences
        self.num_tokens += num_tokens
        try:
            yield
        finally:
            self.num_sequences -= num_sequences
            self.num_tokens -= num_tokens
