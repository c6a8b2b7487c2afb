"""The anyio side of one model's engine.

Handlers call `generate()`; the `run()` loop owns the LLMEngine. Adds and aborts go through an
inbox that the loop drains between steps, so the scheduler is only ever touched by one thread:
each step runs in a worker thread (the event loop stays free), and its outputs are pushed to
per-request channels with send_nowait, so the engine never waits on a slow client.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from engine.admission import Admission
from engine.errors import EngineDeadError, EngineStepError, SequenceError
from engine.llm_engine import LLMEngine
from engine.output_channel import OutputChannel
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from observability.engine_stats import EngineStats

logger = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(
        self,
        engine: LLMEngine,
        *,
        served_model_name: str,
        max_sequences: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.engine = engine
        self.served_model_name = served_model_name
        self.task = "generate"
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.vocab_size = engine.vocab_size
        self.error: BaseException | None = None
        self.stats = EngineStats(
            served_model_name,
            max_model_len=engine.max_model_len,
            cache_config=engine.cache_config(),
            num_speculative_tokens=engine.proposer.k if engine.proposer is not None else 0,
        )
        self._inbox: list[Callable[[], None]] = []
        self._wakeup = anyio.Event()
        # engine request id -> (the request's channel, the index of this sequence in it)
        self._channels: dict[str, tuple[OutputChannel, int]] = {}
        self._ids = itertools.count()
        self.admission = Admission(served_model_name, max_sequences, max_tokens)
        # When the step now running began (time.monotonic()), for the health watchdog.
        self.step_started: float | None = None
        self._logged_failures: set[tuple[str, str]] = set()
        self._sleep_lock = anyio.Lock()

    @property
    def sleep_level(self) -> int:
        return self.engine.runner.sleep_level

    async def sleep(self, level: int) -> None:
        """Refuses new requests (503), lets those in flight finish, then frees the KV cache
        (level 2: the weights too). Asleep already, it only goes deeper."""
        async with self._sleep_lock:
            self.admission.asleep = True
            while self._busy():
                await anyio.sleep(0.02)
            # Idle and admitting nothing: the loop will not touch the engine meanwhile.
            await anyio.to_thread.run_sync(self.engine.sleep, level)

    async def wake_up(self) -> None:
        """Reloads what sleep freed (the weights from disk at level 2) and serves again."""
        async with self._sleep_lock:
            if self.sleep_level:
                await anyio.to_thread.run_sync(self.engine.wake_up)
            self.admission.asleep = False

    def _busy(self) -> bool:
        return bool(
            self.admission.num_sequences
            or self._inbox
            or self.engine.has_work
            or self.step_started is not None
        )

    async def generate(
        self, request_id: str, prompts: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Yields (index into prompts, delta) until every sequence finished; closing aborts."""
        if self.error is not None:
            raise EngineDeadError.of(self.served_model_name, self.error)
        # Released in the finally below, whether the request finished, failed or was left.
        with self.admission.hold(len(prompts), sum(len(ids) for ids, _ in prompts)):
            arrival_time = time.monotonic()  # not when the loop gets to it: a step may be running
            matchers: list[Any] = [None] * len(prompts)
            if any(params.grammar is not None for _, params in prompts):
                matchers = await anyio.to_thread.run_sync(self._compile_grammars, prompts)
            outputs = OutputChannel()
            # Unique per sequence even when clients reuse an X-Request-Id.
            ids = [f"{request_id}-{i}-{next(self._ids)}" for i in range(len(prompts))]
            for i, seq_id in enumerate(ids):
                self._channels[seq_id] = (outputs, i)

            self._submit(lambda: self._add(ids, prompts, matchers, outputs, arrival_time))
            remaining = len(prompts)
            try:
                while remaining:
                    item = await outputs.receive()
                    if isinstance(item, EngineStepError | EngineDeadError):
                        raise item  # a failed step, or the engine died
                    if isinstance(item, ValueError):
                        raise item  # this request's input, refused by the engine
                    remaining -= item[1].finished
                    yield item
            finally:
                # Runs on completion, on error and on cancellation (client gone): never awaits.
                unfinished = [seq_id for seq_id in ids if self._channels.pop(seq_id, None)]
                if unfinished:
                    self._submit(lambda: [self._abort(seq_id) for seq_id in unfinished])

    async def run(self) -> None:
        """The engine loop; runs until cancelled (server shutdown). A step that fails fails its
        requests (LLMEngine.step) and the loop goes on; only a failure outside the step (the
        loop's own bookkeeping) leaves the engine dead, its requests failed (503)."""
        try:
            while True:
                if not self._inbox and not self.engine.has_work:
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                inbox, self._inbox = self._inbox, []
                for action in inbox:
                    action()
                if self.engine.has_work:
                    self.step_started = time.monotonic()
                    try:
                        results = await anyio.to_thread.run_sync(self.engine.step)
                    finally:
                        self.step_started = None
                    self._publish(results)
                self._update_gauges()
        except Exception as exc:
            logger.exception("engine for %s failed; failing its requests", self.served_model_name)
            self.error = exc
            dead = EngineDeadError.of(self.served_model_name, exc)
            for outputs, _ in self._channels.values():
                outputs.send_nowait(dead)
            raise

    def _add(
        self,
        ids: list[str],
        prompts: list[tuple[list[int], SamplingParams]],
        matchers: list[Any],
        outputs: OutputChannel,
        arrival_time: float,
    ) -> None:
        added = []
        try:
            for seq_id, (token_ids, params), matcher in zip(ids, prompts, matchers, strict=True):
                if seq_id in self._channels:  # not aborted before it got here
                    try:
                        seq = self.engine.add_request(
                            seq_id, token_ids, params, arrival_time, matcher
                        )
                    except ValueError as exc:  # refused input
                        outputs.send_nowait(exc)  # the request fails; the engine goes on
                        return
                    added.append(seq)
        finally:
            self.stats.on_added(added)

    def _compile_grammars(self, prompts: list[tuple[list[int], SamplingParams]]) -> list[Any]:
        """Each sequence's structured-output matcher (None without a grammar), compiled in a
        worker thread, since compiling grows with the grammar: once per distinct grammar,
        then copied for the other samples. ValueError if one does not compile."""
        compiled: dict[str, Any] = {}
        matchers = []
        for _, params in prompts:
            grammar = params.grammar
            if grammar is None:
                matchers.append(None)
            elif grammar in compiled:
                matchers.append(compiled[grammar].deep_copy())
            else:
                compiled[grammar] = self.engine.compile_grammar(grammar)
                matchers.append(compiled[grammar])
        return matchers

    def _submit(self, action: Callable[[], None]) -> None:
        self._inbox.append(action)
        self._wakeup.set()

    def _abort(self, seq_id: str) -> None:
        seq = self.engine.abort(seq_id)
        if seq is not None:
            self.stats.on_finished(seq)

    def _publish(self, results: list[tuple[Any, RequestOutput | Exception]]) -> None:
        failed = [(seq, exc) for seq, exc in results if isinstance(exc, Exception)]
        if failed:
            self._report_failures(failed)
        results = [(seq, out) for seq, out in results if not isinstance(out, Exception)]
        self.stats.on_step(
            self.engine.last_step,
            [seq for seq, _ in results],
            sum(len(output.new_token_ids) for _, output in results),
        )
        for seq, output in results:
            if output.finished:
                self.stats.on_finished(seq)
                target = self._channels.pop(seq.request_id, None)
            else:
                target = self._channels.get(seq.request_id)
            if target is not None:
                outputs, index = target
                outputs.send_nowait((index, output))

    def _report_failures(self, failed: list[tuple[Any, Exception]]) -> None:
        """Fails the requests whose sequences a step failed; logs each kind of failure with
        its traceback once (a failure that repeats every step must not flood the log)."""
        for seq, exc in failed:
            self.stats.on_finished(seq)
            target = self._channels.pop(seq.request_id, None)
            if target is not None:
                target[0].send_nowait(EngineStepError.caused_by(exc))
        exc = failed[0][1]
        scope = "sequence" if isinstance(exc, SequenceError) else "step"
        self.stats.on_step_failure(scope)
        kind = (type(exc).__name__, str(exc))
        if kind in self._logged_failures:
            logger.warning("%s: a %s failed again (%s: %s)", self.served_model_name, scope, *kind)
        else:
            if len(self._logged_failures) < 100:  # bounded, however varied the messages
                self._logged_failures.add(kind)
            logger.error(
                "%s: a %s failed; its %d sequence(s) failed, the engine goes on",
                self.served_model_name,
                scope,
                len(failed),
                exc_info=exc,
            )

    def _update_gauges(self) -> None:
        sched = self.engine.scheduler
        blocks = sched.block_manager
        self.stats.set_gauges(sched.num_running, sched.num_waiting, blocks.usage)
        self.stats.set_prefix_cache_totals(blocks.num_queried_tokens, blocks.num_hit_tokens)
