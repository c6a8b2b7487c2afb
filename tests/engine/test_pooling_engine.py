"""Dynamic batching of pooling requests, with the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import anyio
import pytest
import torch

from configs.settings import EMBEDDED_EMBEDDING_MODEL
from engine.loader import resolve_model_dir
from engine.models.encoder import EncoderModel
from engine.pooling_engine import PoolingEngine

pytestmark = pytest.mark.anyio


class CountingEncoder:
    """The real encoder, recording the token ids of every pass (and failing on request)."""

    def __init__(self, encoder: EncoderModel) -> None:
        self.encoder = encoder
        self.max_model_len = encoder.max_model_len
        self.passes: list[list[list[int]]] = []
        self.fail_on_token: int | None = None

    def encode(
        self, batch: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> torch.Tensor:
        self.passes.append(batch)
        if self.fail_on_token is not None and any(self.fail_on_token in ids for ids in batch):
            raise RuntimeError("injected failure")
        return self.encoder.encode(batch, token_type_ids)


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = EncoderModel(model_dir, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id)
    return tokenizer, encoder


async def _serve(engine: PoolingEngine, requests: list[list[list[int]]]) -> list[torch.Tensor]:
    results: list[torch.Tensor | None] = [None] * len(requests)

    async def one(i: int) -> None:
        results[i] = await engine.encode(requests[i])

    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        async with anyio.create_task_group() as clients:
            for i in range(len(requests)):
                clients.start_soon(one, i)
        tg.cancel_scope.cancel()
    return results


async def test_requests_arriving_together_share_passes_and_keep_their_vectors(minilm) -> None:
    tokenizer, encoder = minilm
    counting = CountingEncoder(encoder)
    engine = PoolingEngine(counting, max_num_batched_tokens=4096)
    texts = [[f"request {r} sentence {s} about cats and dogs" for s in range(3)] for r in range(8)]
    requests = [[tokenizer(t)["input_ids"] for t in req] for req in texts]

    results = await _serve(engine, requests)

    assert len(counting.passes) < len(requests)  # batched across requests
    for req, result in zip(requests, results, strict=True):
        assert result.shape == (3, 384)
        torch.testing.assert_close(result, encoder.encode(req), atol=1e-6, rtol=0)


async def test_passes_stay_within_the_token_budget(minilm) -> None:
    tokenizer, encoder = minilm
    counting = CountingEncoder(encoder)
    engine = PoolingEngine(counting, max_num_batched_tokens=30)
    short = tokenizer("a short input of ten tokens or so")["input_ids"]
    long = tokenizer(" ".join(["word"] * 60))["input_ids"]  # over the budget on its own

    results = await _serve(engine, [[short] * 5, [long], [short]])

    for batch in counting.passes:
        assert len(batch) == 1 or sum(map(len, batch)) <= 30
    assert [r.shape[0] for r in results] == [5, 1, 1]


async def test_a_failed_pass_fails_its_requests_only_and_the_engine_keeps_serving(minilm) -> None:
    tokenizer, encoder = minilm
    counting = CountingEncoder(encoder)
    counting.fail_on_token = 4242
    engine = PoolingEngine(counting, max_num_batched_tokens=4096)
    good = tokenizer("fine")["input_ids"]

    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        with pytest.raises(RuntimeError, match="injected"):
            await engine.encode([good, [101, 4242, 102]])
        after = await engine.encode([good])
        tg.cancel_scope.cancel()

    torch.testing.assert_close(after, encoder.encode([good]), atol=1e-6, rtol=0)


async def test_a_request_cancelled_while_queued_is_never_run(minilm) -> None:
    tokenizer, encoder = minilm
    counting = CountingEncoder(encoder)
    engine = PoolingEngine(counting, max_num_batched_tokens=4096)
    marker = tokenizer("cancelled before its turn")["input_ids"]

    with anyio.move_on_after(0):  # the engine loop is not running: the request stays queued
        await engine.encode([marker])
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await engine.encode([tokenizer("served")["input_ids"]])
        tg.cancel_scope.cancel()

    assert all(marker not in batch for batch in counting.passes)
    assert engine.num_passes == 1


async def test_prompt_tokens_past_capacity_are_refused(minilm) -> None:
    from engine.errors import EngineOverloadedError

    tokenizer, encoder = minilm
    ids = tokenizer("capacity")["input_ids"]
    engine = PoolingEngine(encoder, max_num_batched_tokens=512, max_tokens=2 * len(ids))
    results: list[object] = []

    async def one() -> None:
        try:
            results.append(await engine.encode([ids]))
        except EngineOverloadedError as exc:
            results.append(exc)

    # The loop is not running yet, so the first two wait in the queue and the third is refused.
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert engine.admission.num_tokens == 2 * len(ids)
        assert isinstance(results[0], EngineOverloadedError)
        tg.start_soon(engine.run)
        while len(results) < 3:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [type(r).__name__ for r in results[1:]] == ["Tensor", "Tensor"]
    assert (engine.admission.num_sequences, engine.admission.num_tokens) == (0, 0)


async def test_a_dead_loop_fails_the_waiting_requests_and_refuses_new_ones(minilm) -> None:
    from engine.errors import EngineDeadError

    tokenizer, encoder = minilm
    engine = PoolingEngine(encoder, max_num_batched_tokens=512)
    ids = tokenizer("dead")["input_ids"]

    def broken_batching() -> list:
        raise RuntimeError("injected loop failure")

    engine._next_batch = broken_batching
    results: list[object] = []

    async def waiting() -> None:
        try:
            results.append(await engine.encode([ids]))
        except EngineDeadError as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="injected loop failure"):
            await engine.run()
    assert isinstance(results[0], EngineDeadError)  # not left waiting forever
    with pytest.raises(EngineDeadError, match="died"):
        await engine.encode([ids])
    assert engine.admission.num_sequences == 0
