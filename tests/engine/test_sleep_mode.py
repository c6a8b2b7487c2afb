"""Sleep mode in the engine: the KV cache (and at level 2 the weights) freed, requests refused
while asleep, those in flight finished first, the same greedy words after waking."""

from __future__ import annotations

import anyio
import pytest

from configs.settings import Settings
from engine.async_engine import AsyncEngine
from engine.errors import EngineSleepingError
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]


@pytest.fixture(scope="module")
def engine(smollm2_dir) -> LLMEngine:
    return LLMEngine(
        Settings(dtype="float32", max_model_len=128, kv_cache_memory_gb=0.05), smollm2_dir
    )


def _generate(engine: LLMEngine, request_id: str) -> list[int]:
    seq = engine.add_request(request_id, PROMPT, GREEDY)
    while engine.has_work:
        engine.step()
    return seq.output_token_ids


@pytest.mark.parametrize("level", [1, 2])
def test_sleep_frees_and_wake_up_restores_the_same_greedy_words(engine, level):
    before = _generate(engine, f"before-{level}")
    assert engine.scheduler.block_manager.cached_block_ids  # the prompt is in the prefix cache
    engine.sleep(level)
    runner = engine.runner
    assert runner.kv_cache.numel() == 0 and runner.sleep_level == level
    assert (runner.model is None) is (level == 2)
    # The cache's contents are gone, so are the blocks it advertised.
    assert not engine.scheduler.block_manager.cached_block_ids
    engine.wake_up()
    assert runner.sleep_level == 0 and runner.kv_cache.numel() > 0
    assert _generate(engine, f"after-{level}") == before


@pytest.mark.anyio
async def test_asleep_the_engine_refuses_and_sleep_waits_for_requests_in_flight(engine):
    async_engine = AsyncEngine(engine, served_model_name="m")
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(async_engine.run)
        outputs = async_engine.generate("in-flight", [(PROMPT, params)])
        first = await outputs.__anext__()  # running
        sleeping = anyio.Event()

        async def put_to_sleep() -> None:
            await async_engine.sleep(1)
            sleeping.set()

        tg.start_soon(put_to_sleep)
        await anyio.sleep(0.05)
        with pytest.raises(EngineSleepingError, match="asleep"):
            await async_engine.generate("refused", [(PROMPT, params)]).__anext__()
        rest = [item async for item in outputs]  # the request in flight still finishes
        assert 1 + len(rest) == 6 and rest[-1][1].finished
        await sleeping.wait()
        assert async_engine.sleep_level == 1
        await async_engine.wake_up()
        assert async_engine.sleep_level == 0
        woken = [item async for item in async_engine.generate("woken", [(PROMPT, params)])]
        assert woken[-1][1].finished
        assert first[1].new_token_ids == woken[0][1].new_token_ids
        tg.cancel_scope.cancel()
