"""One model's synchronous engine: schedule → run → postprocess → publish, one step at a time.

Not thread-safe by design: the async engine calls every method from one place at a time.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from configs.settings import Settings
from engine.block_manager import BlockManager
from engine.detokenizer import IncrementalDetokenizer
from engine.errors import SequenceError
from engine.logits_processors import GrammarMatchers
from engine.model_runner import (
    ModelRunner,
    StepOutput,
    free_memory_bytes,
    resolve_dtype,
    resolve_kv_cache_dtype,
)
from engine.ngram_proposer import NgramProposer
from engine.outputs import RequestOutput, TokenLogprobs
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerOutput
from engine.sequence import Sequence

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.block_size = settings.block_size
        self.warm_up_seconds: float | None = None  # set by warm_up(), for the startup log
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = resolve_dtype(settings.dtype)
        # The server resolves "auto" from where the model came from (Settings.quantization_for);
        # an engine given a folder directly keeps its weights as they are.
        quantization = "none" if settings.quantization == "auto" else settings.quantization
        logger.info("loading %s (%s, quantization %s)", model_dir, dtype, quantization)
        self.runner = ModelRunner(
            model_dir,
            dtype=dtype,
            block_size=settings.block_size,
            kv_cache_bytes=_kv_cache_bytes(settings),
            kv_cache_dtype=resolve_kv_cache_dtype(settings.kv_cache_dtype, settings.dtype, dtype),
            quantization=quantization,
            matmul=settings.matmul,
            compile_cache_dir=Path(settings.torch_compile_cache_dir)
            if settings.torch_compile
            else None,
        )
        cfg = self.runner.config
        self.vocab_size = cfg.vocab_size
        self.max_model_len = settings.max_model_len or cfg.max_position_embeddings
        capacity = self.runner.num_blocks * settings.block_size
        logger.info(
            "max_model_len %d; the KV cache holds %d tokens: at most %.1f concurrent sequences "
            "of max_model_len (more when shorter; max_num_seqs caps the batch)",
            self.max_model_len,
            capacity,
            capacity / self.max_model_len,
        )
        if not settings.enforce_eager:
            self.runner.capture_graphs(settings.max_num_seqs, self.max_model_len)
        eos_token_ids = _eos_token_ids(model_dir, self.tokenizer)
        self.runner.eos_token_ids = eos_token_ids
        self.runner.grammars = GrammarMatchers(self.tokenizer)
        self.scheduler = Scheduler(
            BlockManager(
                self.runner.num_blocks,
                settings.block_size,
                enable_prefix_caching=settings.enable_prefix_caching,
                sliding_window=cfg.kv_window,
            ),
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            long_prefill_token_threshold=settings.long_prefill_token_threshold,
            max_model_len=self.max_model_len,
            eos_token_ids=eos_token_ids,
        )
        spec = self.speculative = settings.speculative
        self.proposer = (
            NgramProposer(
                spec.num_speculative_tokens,
                spec.prompt_lookup_min,
                spec.prompt_lookup_max,
                self.max_model_len,
            )
            if spec is not None
            else None
        )
        self._detokenizers: dict[int, IncrementalDetokenizer] = {}
        # seq_id -> prompt logprobs so far (None for the first token), published with the
        # first output token
        self._prompt_logprobs: dict[int, list[TokenLogprobs | None]] = {}
        self.last_step: SchedulerOutput | None = None  # for metrics

    def warm_up(self) -> None:
        """Run one short request through every stage, so the first user does not pay for it.

        With torch_compile this is where the model compiles (a prefill and a decode step both
        run the one dynamic-shape graph).
        """
        start = time.perf_counter()
        self.add_request(
            "warm-up", [0] * 8, SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
        )
        while self.has_work:
            self.step()
        self.warm_up_seconds = time.perf_counter() - start
        logger.info(
            "warm-up took %.1f s%s",
            self.warm_up_seconds,
            " (including torch.compile)" if self.runner.compiled else "",
        )

    def cache_config(self) -> dict[str, str]:
        """The KV cache's configuration under vLLM's CacheConfig names (as strings, the way
        vLLM's vllm:cache_config_info labels them)."""
        runner = self.runner
        return {
            "block_size": str(self.block_size),
            "cache_dtype": str(runner.kv_cache_dtype).removeprefix("torch."),
            "enable_prefix_caching": str(self.scheduler.block_manager.enable_prefix_caching),
            "prefix_caching_hash_algo": "blake2b",  # engine/block_manager.py: hash_block
            "num_gpu_blocks": str(runner.num_blocks),  # vLLM's name, on whatever device
            "kv_cache_memory_bytes": str(runner.num_blocks * runner.bytes_per_block),
        }

    def sleep(self, level: int) -> None:
        """Frees the KV cache (level 2: the weights too); nothing may be in flight. The prefix
        cache's blocks lose their contents, so it forgets them."""
        assert not self.has_work, "sleep with sequences in flight"
        self.scheduler.block_manager.reset_prefix_cache()
        self.runner.sleep(level)

    def wake_up(self) -> None:
        self.runner.wake_up()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
        matcher: Any = None,
    ) -> Sequence:
        """Raises ValueError (before anything is queued) for a grammar that does not compile.

        arrival_time: when the request reached the server (time.monotonic()); default now.
        matcher: the grammar's matcher, compiled beforehand (`compile_grammar`); else compiled
        here.
        """
        seq = Sequence(request_id, prompt_token_ids, params, arrival_time)
        if params.grammar is not None:
            if matcher is None:
                matcher = self.compile_grammar(params.grammar)
            assert self.runner.grammars is not None
            self.runner.grammars.add(seq.seq_id, matcher, params.grammar_after_token_id)
        self._detokenizers[seq.seq_id] = IncrementalDetokenizer(
            self.tokenizer,
            prompt_token_ids,
            stop=params.stop,
            skip_special_tokens=params.skip_special_tokens,
            spaces_between_special_tokens=params.spaces_between_special_tokens,
            include_stop_str_in_output=params.include_stop_str_in_output,
        )
        self.runner.add(seq)
        if params.prompt_logprobs is not None:
            self._prompt_logprobs[seq.seq_id] = [None]
        self.scheduler.add(seq)
        return seq

    def compile_grammar(self, grammar: str) -> Any:
        """A structured-output matcher; ValueError if the grammar does not compile.
        Thread-safe, unlike the rest of the engine."""
        assert self.runner.grammars is not None
        return self.runner.grammars.compile(grammar)

    def abort(self, request_id: str) -> Sequence | None:
        seq = self.scheduler.abort(request_id)
        if seq is not None:
            self._release(seq)
        return seq

    def step(self) -> list[tuple[Sequence, RequestOutput | Exception]]:
        """One step's outputs, one per sequence that got a token, or the exception that failed
        a sequence (it is finished as aborted, its KV freed). A failure that belongs to one
        sequence fails it alone (the others are scheduled again next step, their state
        untouched); any other fails every sequence of the step. Either way the engine can
        step on."""
        scheduled = self.scheduler.schedule()
        self.last_step = scheduled
        if scheduled.is_empty:
            return []
        # Output tokens before the step: what follows them is this step's news.
        num_before = {seq.seq_id: seq.num_output_tokens for seq in scheduled.seqs}
        try:
            result = self.runner.run(scheduled)
            self._collect_prompt_logprobs(result)
            updated = self.scheduler.postprocess(scheduled, result.sampled)
        except SequenceError as exc:
            seq = next(s for s in scheduled.seqs if s.seq_id == exc.seq_id)
            return [(seq, self._fail(seq, exc))]
        except Exception as exc:
            return [(seq, self._fail(seq, exc)) for seq in scheduled.seqs if not seq.is_finished]
        outputs: list[tuple[Sequence, RequestOutput | Exception]] = []
        for seq in updated:
            try:
                output = self._publish(seq, num_before[seq.seq_id], result.logprobs.get(seq.seq_id))
                outputs.append((seq, output))
            except Exception as exc:  # its detokenizing, say: the others' outputs stand
                outputs.append((seq, self._fail(seq, exc)))
        if self.proposer is not None:
            self._propose_drafts(updated)
        return outputs

    def _propose_drafts(self, seqs: list[Sequence]) -> None:
        """Guess the next tokens of the sequences that go on decoding, for their next step to
        check. Not for sequences with logits processors or penalties: those change each
        token's distribution by the tokens before it, drafts included."""
        assert self.proposer is not None and self.speculative is not None
        limit = self.speculative.disable_by_batch_size
        if limit is not None and self.scheduler.num_running + self.scheduler.num_waiting > limit:
            return  # a batch this large keeps the cores busy: verifying drafts would not pay
        for seq in seqs:
            params = seq.params
            if seq.is_finished or params.has_logits_processors or params.has_penalties:
                continue
            # No more drafts than tokens the sequence may still produce, less the model's own.
            room = params.max_tokens - seq.num_output_tokens - 1
            if room > 0:
                seq.spec_token_ids = self.proposer.propose(seq.token_ids)[:room]

    def _fail(self, seq: Sequence, exc: Exception) -> Exception:
        if self.abort(seq.request_id) is None:  # it had finished: still forget its state
            self._release(seq)
        return exc

    def _collect_prompt_logprobs(self, result: StepOutput) -> None:
        for seq_id, (first, entries) in result.prompt_logprobs.items():
            collected = self._prompt_logprobs.get(seq_id)
            if collected is None:
                continue
            # A recompute after preemption scores positions again: keep the first scores.
            collected.extend(entries[len(collected) - first :])

    def _publish(
        self, seq: Sequence, num_before: int, logprobs: list[TokenLogprobs] | None
    ) -> RequestOutput:
        """The output of a sequence that received tokens: those after its first num_before
        output tokens."""
        detok = self._detokenizers[seq.seq_id]
        new_tokens = seq.output_token_ids[num_before:]
        text = ""
        for i, token_id in enumerate(new_tokens):
            piece, matched = detok.push([token_id])
            text += piece
            if matched is not None:
                # Tokens after the one that completed a stop string are not output.
                del seq.token_ids[seq.num_tokens - len(new_tokens) + i + 1 :]
                new_tokens = new_tokens[: i + 1]
                self.scheduler.finish(seq, "stop", matched)
                break
        else:
            if seq.is_finished:
                text += detok.flush()
        if logprobs is not None:  # one per sampled row: a stop may have kept fewer tokens
            logprobs = logprobs[: len(new_tokens)]
        prompt_logprobs = None
        if num_before == 0:
            prompt_logprobs = self._prompt_logprobs.pop(seq.seq_id, None)
        if seq.is_finished:
            self._release(seq)
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new_tokens,
            new_text=text,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            finished=seq.is_finished,
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
            num_cached_tokens=seq.num_cached_tokens,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _release(self, seq: Sequence) -> None:
        self._detokenizers.pop(seq.seq_id, None)
        self._prompt_logprobs.pop(seq.seq_id, None)
        self.runner.release(seq)


def _kv_cache_bytes(settings: Settings) -> int:
    if settings.kv_cache_memory_fraction is None:
        return int(settings.kv_cache_memory_gb * 2**30)
    free = free_memory_bytes()
    logger.info(
        "KV cache gets %.0f%% of %.1f GiB free",
        settings.kv_cache_memory_fraction * 100,
        free / 2**30,
    )
    return int(settings.kv_cache_memory_fraction * free)


def _eos_token_ids(model_dir: Path, tokenizer: object) -> frozenset[int]:
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    gen_config = model_dir / "generation_config.json"
    if gen_config.is_file():
        eos = json.loads(gen_config.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return frozenset(ids)
