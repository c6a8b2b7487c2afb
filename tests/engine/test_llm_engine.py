"""The synchronous engine with the real model: preemption, abort and stop strings end to end."""

from __future__ import annotations

import pytest
import torch

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.model_runner import resolve_kv_cache_dtype
from engine.sampling_params import SamplingParams

BYTES_PER_BLOCK_BF16 = 2 * 30 * 16 * 3 * 64 * 2  # k+v, layers, block_size, kv heads, dim, bytes
BYTES_PER_BLOCK_F32 = 2 * BYTES_PER_BLOCK_BF16


@pytest.fixture(scope="module")
def small_engine(smollm2_dir) -> LLMEngine:
    # 12 blocks of 16 tokens: room for 192 tokens, while the requests below need 6 x 64.
    settings = Settings(
        dtype="bfloat16", max_model_len=128, kv_cache_memory_gb=12 * BYTES_PER_BLOCK_BF16 / 2**30
    )
    engine = LLMEngine(settings, smollm2_dir)
    assert engine.runner.num_blocks == 12
    return engine


def _run(engine: LLMEngine) -> dict[str, list]:
    outputs: dict[str, list] = {}
    while engine.has_work:
        for seq, out in engine.step():
            outputs.setdefault(seq.request_id, []).append(out)
    return outputs


def test_preemption_by_recompute_still_finishes_every_request(small_engine):
    preempted = 0
    seqs = [
        small_engine.add_request(
            f"r{i}",
            list(range(200 + i, 224 + i)),
            SamplingParams(max_tokens=40, temperature=0, ignore_eos=True),
        )
        for i in range(6)
    ]
    while small_engine.has_work:
        small_engine.step()
        preempted += len(small_engine.last_step.preempted)
    assert preempted > 0
    for seq in seqs:
        assert seq.finish_reason == "length" and seq.num_output_tokens == 40
    assert small_engine.scheduler.block_manager.num_free_blocks == 12


def test_abort_frees_blocks_at_once(small_engine):
    small_engine.add_request("long", [1, 2, 3, 4], SamplingParams(max_tokens=100, ignore_eos=True))
    for _ in range(3):
        small_engine.step()
    assert small_engine.scheduler.block_manager.num_free_blocks < 12
    seq = small_engine.abort("long")
    assert seq is not None and seq.finish_reason == "abort"
    assert small_engine.scheduler.block_manager.num_free_blocks == 12
    assert not small_engine.has_work


def test_stop_string_ends_the_sequence_and_is_not_in_the_text(small_engine, smollm2_tokenizer):
    prompt = smollm2_tokenizer.encode("1, 2, 3, 4, 5, 6,")
    small_engine.add_request("free", prompt, SamplingParams(max_tokens=12, temperature=0))
    text = "".join(o.new_text for o in _run(small_engine)["free"])
    stop = text.strip().split(",")[1].strip()  # the second number the model writes
    small_engine.add_request(
        "stopped", prompt, SamplingParams(max_tokens=12, temperature=0, stop=(stop,))
    )
    outs = _run(small_engine)["stopped"]
    assert outs[-1].finished and outs[-1].finish_reason == "stop"
    assert outs[-1].stop_reason == stop
    stopped_text = "".join(o.new_text for o in outs)
    assert stop not in stopped_text and text.startswith(stopped_text)


def test_token_rules_are_built_once_when_added_and_dropped_when_finished(small_engine):
    bias = tuple((t, -100.0) for t in range(1000))  # a large map: its tensors are built once
    params = SamplingParams(
        max_tokens=3, temperature=0, ignore_eos=True, logit_bias=bias, allowed_token_ids=(7, 8)
    )
    seq = small_engine.add_request("rules", [5, 6, 7], params)
    rules = small_engine.runner._token_rules[seq.seq_id]
    small_engine.step()
    assert small_engine.runner._token_rules[seq.seq_id] is rules  # not rebuilt by the step
    outputs = _run(small_engine)["rules"]
    assert all(o.new_token_ids[0] in (7, 8) for o in outputs)
    assert seq.seq_id not in small_engine.runner._token_rules


def test_prompt_served_from_the_prefix_cache_decodes_exactly_as_computed(smollm2_dir):
    engine = LLMEngine(Settings(dtype="bfloat16"), smollm2_dir)
    prompt = list(range(300, 300 + 100))  # 6 full blocks of 16, 4 tokens over

    def run(request_id: str):
        seq = engine.add_request(request_id, prompt, SamplingParams(max_tokens=16, temperature=0))
        while engine.has_work:
            engine.step()
        return seq

    first, second = run("first"), run("second")
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == 96
    assert second.output_token_ids == first.output_token_ids


@pytest.mark.anyio
async def test_a_refused_grammar_fails_its_request_and_the_engine_goes_on(small_engine):
    import anyio
    import llguidance

    from engine.async_engine import AsyncEngine

    engine = AsyncEngine(small_engine, served_model_name="m")
    bad = SamplingParams(max_tokens=2, grammar=llguidance.LLMatcher.grammar_from_regex("[a-"))
    good = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        with pytest.raises(ValueError, match="invalid grammar"):
            async for _ in engine.generate("bad", [([5, 6, 7], bad)]):
                pass
        outputs = [out async for _, out in engine.generate("good", [([5, 6, 7], good)])]
        assert outputs[-1].finished and outputs[-1].num_output_tokens == 2
        tg.cancel_scope.cancel()
    assert engine.error is None and not small_engine.has_work


def test_logprobs_and_prompt_logprobs_reach_the_outputs(small_engine):
    seq = small_engine.add_request(
        "lp",
        [5, 6, 7, 8],
        SamplingParams(max_tokens=3, temperature=0, logprobs=2, prompt_logprobs=1),
    )
    outputs = _run(small_engine)["lp"]
    assert outputs[0].prompt_logprobs[0] is None and len(outputs[0].prompt_logprobs) == 4
    assert [o.prompt_logprobs for o in outputs[1:]] == [None, None]
    for out, token in zip(outputs, seq.output_token_ids, strict=True):
        (entry,) = out.logprobs
        assert entry.token_id == token and entry.rank == 1 and len(entry.top) == 2
        # Greedy: the chosen token is a most likely one (bf16 logits can tie).
        assert entry.top[0][1] == entry.logprob


def test_named_token_logprobs_are_reported_whatever_their_rank(small_engine):
    prompt = [5, 6, 7, 8]
    small_engine.add_request("top", prompt, SamplingParams(max_tokens=1, temperature=0, logprobs=3))
    (top,) = _run(small_engine)["top"][0].logprobs
    # The three most likely tokens, asked for by id (in another order), and one far down.
    named = (top.top[2][0], top.top[0][0], top.top[1][0], 4242)
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=0, logprob_token_ids=named)
    small_engine.add_request("named", prompt, params)
    (entry,) = _run(small_engine)["named"][0].logprobs
    assert [token for token, _ in entry.named] == list(named)
    values = dict(entry.named)
    for token, value in top.top:
        assert values[token] == value  # the same step, the same distribution
    assert values[4242] <= top.top[2][1]
    assert entry.top == ()  # logprobs=0: no most-likely list


@pytest.mark.anyio
async def test_admission_counts_sequences_and_prompt_tokens_and_returns_to_zero(small_engine):
    import anyio

    from engine.async_engine import AsyncEngine
    from engine.errors import EngineOverloadedError

    engine = AsyncEngine(small_engine, served_model_name="m", max_sequences=3, max_tokens=10)
    admission = engine.admission
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        # An idle model takes a request past both limits (4 sequences, 12 tokens): alone, it
        # would otherwise never run.
        first = engine.generate("a", [([5, 6, 7], params)] * 4)
        await first.__anext__()
        assert (admission.num_sequences, admission.num_tokens) == (4, 12)
        with pytest.raises(EngineOverloadedError, match=r"at capacity \(4 sequences, 12 prompt"):
            await engine.generate("b", [([5], params)]).__anext__()
        await first.aclose()  # the client left: its place frees at once
        assert (admission.num_sequences, admission.num_tokens) == (0, 0)

        second = engine.generate("c", [([5, 6, 7], params)] * 2)  # 2 sequences, 6 tokens
        await second.__anext__()
        with pytest.raises(EngineOverloadedError):  # 3 sequences, but 11 tokens
            await engine.generate("d", [([5, 6, 7, 8, 9], params)]).__anext__()
        with pytest.raises(EngineOverloadedError):  # 10 tokens, but 4 sequences
            await engine.generate("e", [([5], params)] * 2).__anext__()
        outputs = [out async for _, out in engine.generate("f", [([5, 6, 7, 8], params)])]
        assert outputs[-1].finished  # 3 sequences, 10 tokens: exactly the limits
        await second.aclose()
        tg.cancel_scope.cancel()
    assert (admission.num_sequences, admission.num_tokens) == (0, 0)


async def _collect(outputs) -> list | BaseException:
    """The request's outputs, or the exception that ended it."""
    try:
        return [out async for _, out in outputs]
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


def _step_failures(scope: str) -> float:
    from observability.metrics import REGISTRY

    value = REGISTRY.get_sample_value(
        "lumen:engine_step_failures_total", {"model_name": "m", "engine": "0", "scope": scope}
    )
    return value or 0.0


@pytest.mark.anyio
async def test_a_forward_pass_that_raises_fails_its_step_and_the_engine_serves_on(
    small_engine, monkeypatch
):
    import anyio

    from engine.async_engine import AsyncEngine
    from engine.errors import EngineStepError

    engine = AsyncEngine(small_engine, served_model_name="m")
    runner = small_engine.runner
    real_forward = runner.forward
    calls = {"n": 0}

    def forward_failing_once(*args, **kwargs):
        assert engine.step_started is not None  # what the /health watchdog reads
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected forward failure")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(runner, "forward", forward_failing_once)
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    before = _step_failures("step")
    results: dict[str, object] = {}

    async def run_request(name: str) -> None:
        results[name] = await _collect(engine.generate(name, [([5, 6, 7], params)]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_request, "a")
        tg.start_soon(run_request, "b")
        await anyio.wait_all_tasks_blocked()  # both submitted: they share the failing step
        tg.start_soon(engine.run)
        while len(results) < 2:
            await anyio.sleep(0.01)
        after = await _collect(engine.generate("c", [([5, 6, 7], params)]))
        tg.cancel_scope.cancel()

    for name in ("a", "b"):
        assert isinstance(results[name], EngineStepError), results[name]
        assert "injected forward failure" in str(results[name])
    assert len(after) == 4 and after[-1].finished  # the engine went on
    assert engine.error is None and _step_failures("step") == before + 1
    assert engine.step_started is None
    assert small_engine.scheduler.block_manager.usage == 0  # the failed ones' blocks were freed


@pytest.mark.anyio
async def test_a_logits_rule_that_raises_fails_its_request_only(small_engine, monkeypatch):
    import anyio

    from engine.async_engine import AsyncEngine
    from engine.errors import EngineStepError
    from engine.logits_processors import TokenRules

    def raising_apply(self, row, output_token_ids):
        raise IndexError("injected rule failure")

    monkeypatch.setattr(TokenRules, "apply", raising_apply)
    engine = AsyncEngine(small_engine, served_model_name="m")
    plain = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    biased = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logit_bias=((9, 1.0),))
    before = _step_failures("sequence")
    results: dict[str, object] = {}

    async def run_request(name: str, params: SamplingParams) -> None:
        results[name] = await _collect(engine.generate(name, [([5, 6, 7], params)]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_request, "biased", biased)
        tg.start_soon(run_request, "plain", plain)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(engine.run)
        while len(results) < 2:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    assert isinstance(results["biased"], EngineStepError)
    assert "injected rule failure" in str(results["biased"])
    assert len(results["plain"]) == 4 and results["plain"][-1].finished
    assert _step_failures("sequence") == before + 1
    assert small_engine.scheduler.block_manager.usage == 0


def test_a_bfloat16_kv_cache_holds_twice_the_tokens_and_keeps_the_predictions(
    smollm2_dir, smollm2_tokenizer
):
    """--kv-cache-dtype bfloat16 under a float32 model: the same memory holds twice the blocks,
    and the keys and values rounded to bf16 move the model's predictions only a little (the
    prompt's logprobs, computed through the cache, and a greedy continuation)."""
    prompt = smollm2_tokenizer.encode(
        "The history of the Roman Empire spans many centuries. It began when Augustus became "
        "the first emperor, and"
    )
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, prompt_logprobs=0)
    results = {}
    for cache_dtype in ("auto", "bfloat16"):
        settings = Settings(
            dtype="float32",
            max_model_len=256,
            kv_cache_memory_gb=40 * BYTES_PER_BLOCK_F32 / 2**30,
            kv_cache_dtype=cache_dtype,
        )
        engine = LLMEngine(settings, smollm2_dir)
        engine.add_request(cache_dtype, prompt, params)
        outs = _run(engine)[cache_dtype]
        results[cache_dtype] = (
            engine,
            [t for out in outs for t in out.new_token_ids],
            torch.tensor([p.logprob for p in outs[0].prompt_logprobs[1:]]),
        )
    (full, full_tokens, full_logprobs), (half, half_tokens, half_logprobs) = results.values()
    assert full.runner.kv_cache.dtype == torch.float32 and full.runner.num_blocks == 40
    assert half.runner.kv_cache.dtype == torch.bfloat16 and half.runner.num_blocks == 80
    assert half.cache_config()["cache_dtype"] == "bfloat16"
    assert (
        half.cache_config()["kv_cache_memory_bytes"] == full.cache_config()["kv_cache_memory_bytes"]
    )
    # Measured: 0.07 on average, the prompt's perplexity within 1% (README excerpts too).
    assert (half_logprobs - full_logprobs).abs().mean() < 0.15
    assert abs(half_logprobs.mean() - full_logprobs.mean()) < 0.05
    assert half_tokens[:4] == full_tokens[:4]
    assert half.scheduler.block_manager.num_free_blocks == 80  # nothing held after the request


@pytest.mark.parametrize(
    ("setting", "dtype_setting", "dtype", "expected"),
    [
        ("auto", "auto", torch.float32, torch.bfloat16),  # a CPU without bf16 math
        ("auto", "auto", torch.bfloat16, torch.bfloat16),
        ("auto", "float32", torch.float32, torch.float32),  # asked for: as vLLM's auto
        ("auto", "bfloat16", torch.bfloat16, torch.bfloat16),
        ("bfloat16", "float32", torch.float32, torch.bfloat16),
    ],
)
def test_the_kv_cache_is_bf16_unless_float32_is_asked_for(setting, dtype_setting, dtype, expected):
    assert resolve_kv_cache_dtype(setting, dtype_setting, dtype) is expected
