"""The engine's Prometheus metrics: exact values from hand-timed sequences, then a real engine
(preemption, prefix-cache hits, n samples, aborts) checked against its sequences' timestamps."""

from __future__ import annotations

import contextlib
import time

import anyio
import pytest

from configs.settings import Settings
from engine.async_engine import AsyncEngine
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence
from observability import metrics
from observability.engine_stats import EngineStats
from observability.metrics import REGISTRY

BYTES_PER_BLOCK_BF16 = 2 * 30 * 16 * 3 * 64 * 2  # k+v, layers, block_size, kv heads, dim, bytes


def value(name: str, model: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, {"model_name": model, "engine": "0", **labels})
    return 0.0 if got is None else got


def hist(name: str, model: str) -> tuple[float, float]:
    """(count, sum) of a histogram's series."""
    return value(name + "_count", model), value(name + "_sum", model)


def test_one_two_five_buckets_follow_vllm() -> None:
    assert metrics.one_two_five_buckets(8192) == (
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
    )  # fmt: skip
    assert metrics.one_two_five_buckets(10) == (1, 2, 5, 10)


def _emit(stats: EngineStats, seq: Sequence, at: float, step: SchedulerOutput | None = None):
    """One sampled token for seq at time `at`, as the scheduler's postprocess stamps it."""
    seq.append_token(7)
    seq.last_token_time = at
    if seq.first_token_time is None:
        seq.first_token_time = at
    stats.on_step(step, [seq])


def _finish(stats: EngineStats, seq: Sequence, reason: str, at: float) -> None:
    seq.finish_reason, seq.finished_time = reason, at
    stats.on_finished(seq)


def test_hand_timed_sequence_gives_exact_values() -> None:
    model = "timed"
    stats = EngineStats(model, max_model_len=1000)
    seq = Sequence("a", list(range(40)), SamplingParams(max_tokens=5), arrival_time=100.0)
    stats.on_added([seq])
    seq.num_cached_tokens = 32  # two blocks of 16 from the prefix cache
    seq.first_scheduled_time = 100.5
    prefill = SchedulerOutput(seqs=[seq], num_new_tokens=[8])
    _emit(stats, seq, 101.0, prefill)
    for at in (101.5, 102.0, 102.5, 103.0):
        _emit(stats, seq, at, SchedulerOutput(seqs=[seq], num_new_tokens=[1]))
    _finish(stats, seq, "length", 103.0)

    assert hist("vllm:time_to_first_token_seconds", model) == (1, 1.0)
    assert hist("vllm:inter_token_latency_seconds", model) == (4, 2.0)
    assert hist("vllm:e2e_request_latency_seconds", model) == (1, 3.0)
    assert hist("vllm:request_queue_time_seconds", model) == (1, 0.5)
    assert hist("vllm:request_inference_time_seconds", model) == (1, 2.5)
    assert hist("vllm:request_prefill_time_seconds", model) == (1, 0.5)
    assert hist("vllm:request_decode_time_seconds", model) == (1, 2.0)
    assert hist("vllm:request_time_per_output_token_seconds", model) == (1, 0.5)
    assert hist("vllm:iteration_tokens_total", model) == (5, 12)
    assert hist("vllm:request_prompt_tokens", model) == (1, 40)
    assert hist("vllm:request_generation_tokens", model) == (1, 5)
    assert hist("vllm:request_params_max_tokens", model) == (1, 5)
    assert hist("vllm:request_prefill_kv_computed_tokens", model) == (1, 8)
    assert hist("vllm:request_params_n", model) == (1, 1)
    assert hist("vllm:request_max_num_generation_tokens", model) == (1, 5)
    assert value("vllm:prompt_tokens_total", model) == 40
    assert value("vllm:prompt_tokens_cached_total", model) == 32
    assert value("vllm:prompt_tokens_by_source_total", model, source="local_cache_hit") == 32
    assert value("vllm:prompt_tokens_by_source_total", model, source="local_compute") == 8
    assert value("vllm:generation_tokens_total", model) == 5
    assert value("vllm:request_success_total", model, finished_reason="length") == 1
    assert value("vllm:request_success_total", model, finished_reason="stop") == 0  # exists
    # Buckets are vLLM's: an e2e of 3 s lands in le=5 but not le=2.5.
    assert value("vllm:e2e_request_latency_seconds_bucket", model, le="2.5") == 0
    assert value("vllm:e2e_request_latency_seconds_bucket", model, le="5.0") == 1
    assert value("vllm:request_prompt_tokens_bucket", model, le="50.0") == 1
    assert value("vllm:request_prompt_tokens_bucket", model, le="20.0") == 0


def test_aborts_observe_only_the_phases_they_lived() -> None:
    model = "aborts"
    stats = EngineStats(model, max_model_len=1000)
    waiting = Sequence("w", [1, 2, 3], SamplingParams(max_tokens=9), arrival_time=10.0)
    running = Sequence("r", [1, 2, 3], SamplingParams(max_tokens=9), arrival_time=10.0)
    stats.on_added([waiting])
    stats.on_added([running])
    running.first_scheduled_time = 11.0
    _emit(stats, running, 12.0)
    _finish(stats, waiting, "abort", 14.0)  # never scheduled
    _finish(stats, running, "abort", 15.0)

    assert value("vllm:request_success_total", model, finished_reason="abort") == 2
    assert hist("vllm:e2e_request_latency_seconds", model) == (2, 4.0 + 5.0)
    assert hist("vllm:request_queue_time_seconds", model) == (1, 1.0)
    assert hist("vllm:request_inference_time_seconds", model) == (1, 4.0)
    assert hist("vllm:request_prefill_time_seconds", model) == (1, 1.0)
    assert hist("vllm:request_decode_time_seconds", model) == (1, 3.0)
    assert hist("vllm:request_time_per_output_token_seconds", model) == (0, 0)  # 1 token
    assert hist("vllm:request_prefill_kv_computed_tokens", model) == (1, 3)  # only the prefilled
    assert value("vllm:prompt_tokens_total", model) == 3  # only the prefilled one
    assert hist("vllm:request_generation_tokens", model) == (2, 1)


def test_n_samples_count_once_per_prompt() -> None:
    model = "samples"
    stats = EngineStats(model, max_model_len=1000)
    params = SamplingParams(max_tokens=4, n=2)
    # Two prompts, two samples each, as /v1/completions submits them.
    seqs = [Sequence(f"s{i}", [1, 2], params, arrival_time=0.0) for i in range(4)]
    stats.on_added(seqs)
    for seq, tokens in zip(seqs, (1, 3, 2, 2), strict=True):
        seq.first_scheduled_time = 0.0
        for k in range(tokens):
            _emit(stats, seq, 1.0 + k)
    for seq in seqs[:3]:
        _finish(stats, seq, "stop", 5.0)
    assert hist("vllm:request_params_n", model) == (1, 2)  # the first prompt's pair is done
    _finish(stats, seqs[3], "stop", 5.0)
    assert hist("vllm:request_params_n", model) == (2, 4)
    assert hist("vllm:request_max_num_generation_tokens", model) == (2, 3 + 2)
    assert value("vllm:request_success_total", model, finished_reason="stop") == 4


def test_speculative_steps_count_drafts_and_accepted_tokens_by_position() -> None:
    model = "speculative"
    stats = EngineStats(model, max_model_len=1000, num_speculative_tokens=3)
    a = Sequence("a", list(range(8)), SamplingParams(max_tokens=50), arrival_time=0.0)
    b = Sequence("b", list(range(8)), SamplingParams(max_tokens=50), arrival_time=0.0)
    # a: 3 drafts, 2 accepted (3 tokens out); b: 1 draft, none accepted (1 token out).
    step = SchedulerOutput(seqs=[a, b], num_new_tokens=[4, 2], draft_acceptance=[(3, 2), (1, 0)])
    a.last_token_time = a.first_token_time = b.last_token_time = b.first_token_time = 1.0
    stats.on_step(step, [a, b], 4)
    assert value("vllm:spec_decode_num_drafts_total", model) == 2
    assert value("vllm:spec_decode_num_draft_tokens_total", model) == 4
    assert value("vllm:spec_decode_num_accepted_tokens_total", model) == 2
    per_pos = [
        value("vllm:spec_decode_num_accepted_tokens_per_pos_total", model, position=str(p))
        for p in range(3)
    ]
    assert per_pos == [1, 1, 0]
    assert value("vllm:generation_tokens_total", model) == 4
    # Without speculative decoding the series are not there at all.
    EngineStats("plain", max_model_len=1000)
    labels = {"model_name": "plain", "engine": "0"}
    assert REGISTRY.get_sample_value("vllm:spec_decode_num_drafts_total", labels) is None


def test_cache_config_info_labels_the_kv_cache() -> None:
    EngineStats("info", max_model_len=64, cache_config={
        "block_size": "16", "cache_dtype": "bfloat16", "enable_prefix_caching": "True",
        "prefix_caching_hash_algo": "blake2b", "num_gpu_blocks": "12",
        "kv_cache_memory_bytes": "1024",
    })  # fmt: skip
    labels = {
        "model_name": "info",
        "engine": "0",
        "block_size": "16",
        "cache_dtype": "bfloat16",
        "enable_prefix_caching": "True",
        "prefix_caching_hash_algo": "blake2b",
        "num_gpu_blocks": "12",
        "kv_cache_memory_bytes": "1024",
    }
    assert REGISTRY.get_sample_value("vllm:cache_config_info", labels) == 1


# --- a real engine ---


@pytest.fixture(scope="module")
def small_engine(smollm2_dir) -> LLMEngine:
    # 12 blocks of 16 tokens (192 tokens) while six requests below need 64 each: preemption.
    settings = Settings(
        dtype="bfloat16", max_model_len=128, kv_cache_memory_gb=12 * BYTES_PER_BLOCK_BF16 / 2**30
    )
    engine = LLMEngine(settings, smollm2_dir)
    assert engine.runner.num_blocks == 12
    return engine


def _async_engine(llm: LLMEngine, name: str) -> tuple[AsyncEngine, list[Sequence]]:
    """An AsyncEngine whose finished sequences are kept, to compare the metrics with."""
    engine = AsyncEngine(llm, served_model_name=name)
    finished: list[Sequence] = []
    on_finished = engine.stats.on_finished

    def keep(seq: Sequence) -> None:
        finished.append(seq)
        on_finished(seq)

    engine.stats.on_finished = keep  # type: ignore[method-assign]
    return engine, finished


async def _until(condition, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_real_engine_metrics_match_its_sequences(small_engine):
    model = "real"
    engine, finished = _async_engine(small_engine, model)
    cache_config = small_engine.cache_config()
    assert cache_config["num_gpu_blocks"] == "12" and cache_config["block_size"] == "16"
    greedy = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    sampled = SamplingParams(max_tokens=6, temperature=1.0, seed=1, ignore_eos=True, n=2)
    prompts = {f"r{i}": [(list(range(200 + i, 224 + i)), greedy)] for i in range(6)}
    prompts["n2"] = [([5, 6, 7], sampled), ([5, 6, 7], sampled)]
    started = time.monotonic()
    first_output: dict[str, float] = {}

    async def one(request_id: str) -> None:
        async for _ in engine.generate(request_id, prompts[request_id]):
            first_output.setdefault(request_id, time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        async with anyio.create_task_group() as clients:
            for request_id in prompts:
                clients.start_soon(one, request_id)
        tg.cancel_scope.cancel()

    assert len(finished) == 8
    for seq in finished:
        assert started <= seq.arrival_time <= seq.first_scheduled_time <= seq.first_token_time
        assert seq.first_token_time <= seq.last_token_time <= seq.finished_time
        request_id = seq.request_id.split("-")[0]
        assert seq.first_token_time <= first_output[request_id] or request_id == "n2"
    preemptions = sum(seq.num_preemptions for seq in finished)
    assert preemptions > 0
    assert value("vllm:num_preemptions_total", model) == preemptions

    def sums(interval) -> tuple[float, float]:
        values = [interval(seq) for seq in finished]
        return len(values), pytest.approx(sum(values), rel=1e-9, abs=1e-9)

    assert hist("vllm:e2e_request_latency_seconds", model) == sums(
        lambda s: s.finished_time - s.arrival_time
    )
    assert hist("vllm:request_queue_time_seconds", model) == sums(
        lambda s: s.first_scheduled_time - s.arrival_time
    )
    assert hist("vllm:request_prefill_time_seconds", model) == sums(
        lambda s: s.first_token_time - s.first_scheduled_time
    )
    assert hist("vllm:request_decode_time_seconds", model) == sums(
        lambda s: s.finished_time - s.first_token_time
    )
    assert hist("vllm:request_inference_time_seconds", model) == sums(
        lambda s: s.finished_time - s.first_scheduled_time
    )
    assert hist("vllm:time_to_first_token_seconds", model) == sums(
        lambda s: s.first_token_time - s.arrival_time
    )
    itl_count, itl_sum = hist("vllm:inter_token_latency_seconds", model)
    assert itl_count == sum(seq.num_output_tokens - 1 for seq in finished) == 6 * 39 + 2 * 5
    # A sequence's gaps add up to the time from its first token to its last.
    assert itl_sum == pytest.approx(
        sum(seq.last_token_time - seq.first_token_time for seq in finished)
    )
    assert value("vllm:generation_tokens_total", model) == 6 * 40 + 2 * 6
    assert value("vllm:prompt_tokens_total", model) == 6 * 24 + 2 * 3
    assert value("vllm:request_success_total", model, finished_reason="length") == 8
    assert hist("vllm:request_params_n", model) == (7, 6 + 2)
    assert hist("vllm:request_params_max_tokens", model) == (8, 6 * 40 + 2 * 6)
    assert hist("vllm:request_generation_tokens", model) == (8, 6 * 40 + 2 * 6)
    assert hist("vllm:request_max_num_generation_tokens", model) == (7, 6 * 40 + 6)
    # Every token the model ran, recomputes after preemption included.
    steps, tokens = hist("vllm:iteration_tokens_total", model)
    assert steps > 40 and tokens >= 6 * 24 + 6 * 39 + 2 * 3 + 2 * 5
    # Idle again: the gauges say so.
    assert value("vllm:num_requests_running", model) == 0
    assert value("vllm:num_requests_waiting", model) == 0
    assert value("vllm:num_requests_waiting_by_reason", model, reason="capacity") == 0
    assert value("vllm:kv_cache_usage_perc", model) == 0


@pytest.mark.anyio
async def test_prefix_cache_hits_are_counted_in_tokens(small_engine):
    model = "prefix"
    engine, _ = _async_engine(small_engine, model)
    blocks = small_engine.scheduler.block_manager
    hits_before = blocks.num_hit_tokens
    params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
    prompt = list(range(600, 650))  # 3 full blocks of 16, 2 tokens over
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        for request_id in ("first", "second"):
            [_ async for _ in engine.generate(request_id, [(prompt, params)])]
        tg.cancel_scope.cancel()
    assert value("vllm:prompt_tokens_cached_total", model) == 48
    assert value("vllm:prompt_tokens_by_source_total", model, source="local_compute") == 50 + 2
    assert blocks.num_hit_tokens - hits_before == 48
    # The counters follow the block manager's running totals (this engine's whole life).
    assert value("vllm:prefix_cache_hits_total", model) == blocks.num_hit_tokens
    assert value("vllm:prefix_cache_queries_total", model) == blocks.num_queried_tokens
    assert hist("vllm:request_prefill_kv_computed_tokens", model) == (2, 50 + 2)


@pytest.mark.anyio
async def test_aborted_requests_leave_the_gauges_at_zero(small_engine, monkeypatch):
    model = "aborted"
    engine, finished = _async_engine(small_engine, model)
    long = SamplingParams(max_tokens=100, temperature=0, ignore_eos=True)
    prompt = list(range(300, 328))
    # One at a time: the second request waits while the first runs.
    monkeypatch.setattr(small_engine.scheduler, "max_num_seqs", 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        async with contextlib.aclosing(engine.generate("running", [(prompt, long)])) as running:
            await running.__anext__()
            waiting = engine.generate("waiting", [(prompt, long)])
            async with anyio.create_task_group() as side:
                side.start_soon(waiting.__anext__)
                await _until(lambda: value("vllm:num_requests_waiting", model) == 1)
                assert value("vllm:num_requests_running", model) == 1
                assert value("vllm:kv_cache_usage_perc", model) > 0
                side.cancel_scope.cancel()
            await waiting.aclose()  # its client left while it waited
        # ... and the running one's client left too.
        await _until(lambda: len(finished) == 2)
        await _until(lambda: value("vllm:num_requests_running", model) == 0)
        tg.cancel_scope.cancel()
    assert value("vllm:num_requests_waiting", model) == 0
    assert value("vllm:kv_cache_usage_perc", model) == 0
    assert value("vllm:request_success_total", model, finished_reason="abort") == 2
    assert hist("vllm:request_queue_time_seconds", model)[0] == 1  # the waiting one never ran
    assert hist("vllm:e2e_request_latency_seconds", model)[0] == 2
    assert not small_engine.has_work
