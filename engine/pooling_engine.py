"""The anyio side of a pooling model (embeddings, scores, classes): dynamic batching.

Every input of every request becomes one queue item. The loop takes items in arrival order
while they fit `max_num_batched_tokens` (always at least one) and runs them as one padded
forward pass in a worker thread, so the event loop never blocks and inputs that arrive
together share a pass. A request whose client went away before its turn is skipped; a pass
that fails fails only the requests in it.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Protocol

import anyio
import attrs
import torch

from engine.admission import Admission
from engine.errors import EngineDeadError, EngineStepError
from observability.metrics import ENGINE_STEP_FAILURES

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    max_model_len: int

    def encode(
        self, batch: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> torch.Tensor: ...


@attrs.define(eq=False)
class _Request:
    num_inputs: int
    done: anyio.Event = attrs.field(factory=anyio.Event)
    rows: dict[int, torch.Tensor] = attrs.field(factory=dict)
    error: BaseException | None = None
    cancelled: bool = False


@attrs.frozen
class _Item:
    request: _Request
    index: int  # which input of the request
    token_ids: list[int]
    token_type_ids: list[int] | None  # a cross-encoder's pair segments


class PoolingEngine:
    def __init__(
        self,
        encoder: Encoder,
        *,
        max_num_batched_tokens: int,
        task: str = "embed",
        served_model_name: str = "",
        tokenizer: Any = None,
        max_model_len: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_num_batched_tokens = max_num_batched_tokens
        # What the protocol handlers read, as on the generation engine (AsyncEngine).
        self.task = task
        self.served_model_name = served_model_name
        self.tokenizer = tokenizer
        self.max_model_len = min(max_model_len or encoder.max_model_len, encoder.max_model_len)
        self.vocab_size = len(tokenizer) if tokenizer is not None else 0
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = anyio.Event()
        self.num_passes = 0  # forward passes run, for metrics and tests
        # An input is one row of a short forward pass: only their tokens are bounded.
        self.admission = Admission(served_model_name, max_tokens=max_tokens)
        self.error: BaseException | None = None  # set when the loop itself died
        self.step_started: float | None = None  # when the running pass began, for /health

    async def encode(
        self, inputs: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> torch.Tensor:
        """One pooled vector per input: [len(inputs), dim] float32, in input order."""
        if self.error is not None:
            raise EngineDeadError.of(self.served_model_name, self.error)
        with self.admission.hold(len(inputs), sum(len(ids) for ids in inputs)):
            request = _Request(len(inputs))
            types = token_type_ids or [None] * len(inputs)
            self._queue.extend(
                _Item(request, i, ids, t)
                for i, (ids, t) in enumerate(zip(inputs, types, strict=True))
            )
            self._wakeup.set()
            try:
                await request.done.wait()
            finally:
                request.cancelled = True  # if still queued (client gone), the loop drops it
        if request.error is not None:
            raise request.error
        return torch.stack([request.rows[i] for i in range(request.num_inputs)])

    async def run(self) -> None:
        """The batching loop; runs until cancelled (server shutdown). A pass that fails fails
        its requests and the loop goes on; a failure of the loop itself leaves the engine dead:
        every waiting request fails, new ones are refused (503)."""
        try:
            await self._loop()
        except Exception as exc:
            logger.exception("pooling engine for %s failed", self.served_model_name)
            self.error = exc
            dead = EngineDeadError.of(self.served_model_name, exc)
            for item in self._queue:
                item.request.error = dead
                item.request.done.set()
            self._queue.clear()
            raise

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            batch = self._next_batch()
            if not batch:
                continue
            self.step_started = time.monotonic()
            try:
                vectors = await anyio.to_thread.run_sync(self._encode, batch)
            except Exception as exc:
                logger.exception("pooling pass of %d inputs failed", len(batch))
                ENGINE_STEP_FAILURES.labels(self.served_model_name, "0", "step").inc()
                failed = EngineStepError.caused_by(exc)
                for request in {item.request for item in batch}:
                    request.error = failed
                    request.done.set()
                continue
            finally:
                self.step_started = None
            self.num_passes += 1
            for item, vector in zip(batch, vectors, strict=True):
                item.request.rows[item.index] = vector
                if len(item.request.rows) == item.request.num_inputs:
                    item.request.done.set()

    def _encode(self, batch: list[_Item]) -> torch.Tensor:
        types = None
        if any(item.token_type_ids is not None for item in batch):
            types = [item.token_type_ids or [0] * len(item.token_ids) for item in batch]
        return self.encoder.encode([item.token_ids for item in batch], types)

    def _next_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        tokens = 0
        while self._queue:
            item = self._queue[0]
            if item.request.cancelled or item.request.error is not None:
                self._queue.popleft()
                continue
            if batch and tokens + len(item.token_ids) > self.max_num_batched_tokens:
                break
            batch.append(self._queue.popleft())
            tokens += len(item.token_ids)
        return batch
