"""Owns the model weights and the KV cache; turns a scheduled batch into sampled tokens.

`run()` takes flat inputs (token ids, positions, slot mapping, block tables, context lengths;
engine/step_inputs.py), runs the model once over every scheduled token, and samples one token
for each sequence whose known tokens are now all in the cache (a decode, or the last chunk of a
prefill). A decode with drafts samples a token at each of its rows and keeps the drafts up to
the first the model disagrees with, then the model's own token there (`accept_drafts`).
The model class comes from the registry (engine/models/registry.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from compiled_kernels import native, triton_attention
from compiled_kernels.attention import AttentionInputs
from compiled_kernels.sampling import sample, sampling_logprobs
from engine.cpu_graphs import MAX_ROWS as CPU_GRAPH_MAX_ROWS
from engine.cpu_graphs import CpuGraph
from engine.cuda_graphs import CudaGraphDecoder
from engine.huge_pages import huge_page_zeros, move_to_huge_pages
from engine.logits_processors import (
    GrammarMatchers,
    TokenRules,
    apply_logits_processors,
    token_rules,
)
from engine.models.attention import attention_context
from engine.models.linear import (
    NO_POSITIONS,
    LibraryPlan,
    Linear,
    library_matmul,
    quantize_linears,
)
from engine.models.moe import SparseMoe
from engine.models.registry import model_class
from engine.outputs import TokenLogprobs
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence
from engine.step_inputs import library_plan, prepare_inputs, sampling_tensors

logger = logging.getLogger(__name__)

# Compiled graphs run at least this many rows (see ModelRunner.forward).
COMPILED_MIN_ROWS = 4


@attrs.frozen
class StepOutput:
    # seq_id -> the new tokens (one, or accepted drafts and one more), for sequences that
    # reached their end
    sampled: dict[int, list[int]]
    logprobs: dict[int, list[TokenLogprobs]]  # seq_id -> its new tokens', where asked for
    # seq_id -> (index of the first prompt token covered, one entry per prompt token from
    # there), for sequences asking for prompt logprobs whose prefill ran this step
    prompt_logprobs: dict[int, tuple[int, list[TokenLogprobs]]]


def resolve_dtype(name: str) -> torch.dtype:
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    # auto: bf16 where the CPU has native bf16 math (AVX-512 BF16 / AMX), else fp32.
    if torch.cuda.is_available() or torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_kv_cache_dtype(name: str, dtype_setting: str, dtype: torch.dtype) -> torch.dtype:
    """The KV cache's element type (Settings.kv_cache_dtype). "auto" is the model's dtype, as
    in vLLM, except under dtype "auto" too: then bf16 on every machine. Where auto computes in
    float32 (a CPU without bf16 math, whose bf16 matmuls are emulated), the cache still stores
    bf16: half the memory and half the bytes a decode step reads, at no measured cost in
    perplexity (docs/performance.md)."""
    if name == "bfloat16" or (name == "auto" and dtype_setting == "auto"):
        return torch.bfloat16
    return dtype


def _cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX-512 BF16 or AMX): without it bf16 matmuls are emulated."""
    return bool({"avx512_bf16", "amx_bf16"} & native.cpu_flags())


def free_memory_bytes() -> int:
    """Memory free for the KV cache: on the GPU if there is one, else MemAvailable."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read free memory; set kv_cache_memory_gb instead")


class ModelRunner:
    def __init__(
        self,
        model_dir: Path,
        *,
        dtype: torch.dtype,
        block_size: int,
        kv_cache_bytes: int,
        kv_cache_dtype: torch.dtype | None = None,
        quantization: str = "none",
        compile_cache_dir: Path | None = None,
        matmul: str = "auto",
    ) -> None:
        """compile_cache_dir: compile the model with torch.compile, caching the compiled code
        there (None: run eagerly). matmul: see Settings.matmul. kv_cache_dtype: the cache's
        element type (None: dtype's)."""
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda" and quantization != "none":
            # The int8/int4 weights are multiplied by the C linear kernel, a CPU kernel.
            raise ValueError(f"quantization {quantization!r} runs on the CPU only; use bf16")
        self.dtype = dtype
        self.kv_cache_dtype = kv_cache_dtype or dtype
        self.block_size = block_size
        self.model_dir = model_dir
        self.quantization = quantization
        self.config = model_class(model_dir).config_class.from_dir(model_dir)
        cfg = self.config
        self.model = self._load_model()

        bytes_per_block = (
            2
            * cfg.num_hidden_layers
            * block_size
            * cfg.num_key_value_heads
            * cfg.head_dim
            * self.kv_cache_dtype.itemsize
        )
        self.bytes_per_block = bytes_per_block
        self.num_blocks = max(1, kv_cache_bytes // bytes_per_block)
        # One more block, owned by no sequence: CUDA graphs' padding rows and the recording of
        # the CPU decode step write there.
        total_blocks = self.num_blocks + 1
        self.total_blocks = total_blocks
        self._allocate_kv_cache()
        # Whether decode attention runs a kernel that takes all decodes in one call (C, or
        # Triton on the GPU) or the torch twin (one call per group of equal block counts): see
        # compiled_kernels/attention.py.
        kernel = (
            "C kernel"
            if native.kernels_for(self.kv_cache) is not None
            else "Triton kernel"
            if triton_attention.supports(self.kv_caches[0][0])
            else None
        )
        self.one_decode_group = kernel is not None
        logger.info("decode attention: %s", kernel or "torch reference")
        logger.info(
            "KV cache: %d blocks of %d tokens (%.2f GiB, %s)",
            self.num_blocks,
            block_size,
            self.kv_cache.numel() * self.kv_cache.element_size() / 2**30,
            str(self.kv_cache_dtype).removeprefix("torch."),
        )
        self._generators: dict[int, torch.Generator] = {}  # seq_id -> per-request generator
        self._token_rules: dict[int, TokenRules] = {}  # seq_id -> its logits rules, if any
        # Set by the engine, which knows the tokenizer: what min_tokens holds back, and the
        # structured-output matchers.
        self.eos_token_ids: frozenset[int] = frozenset()
        self.grammars: GrammarMatchers | None = None
        self.compiled = compile_cache_dir is not None
        if compile_cache_dir is not None:
            # Inductor reads its cache location from this variable whenever it looks for
            # compiled code (it may already hold inductor's default, a temp dir).
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        self._model_forward = self._forward_of(self.model)
        self.cuda_graphs: CudaGraphDecoder | None = None
        self.cpu_graph: CpuGraph | None = None
        self._graph_shape: tuple[int, int] | None = None  # capture_graphs' arguments
        self.sleep_level = 0  # 1: no KV cache; 2: no weights either (sleep())
        # Float layers through the library GEMM in fixed tiles (engine/models/linear.py);
        # eager CPU only: compiled graphs and the GPU take their own.
        if matmul == "auto":
            matmul = "library" if dtype is torch.bfloat16 and _cpu_has_bf16() else "kernel"
        on_eager_cpu = self.device.type == "cpu" and not self.compiled
        # A quantized model has no float layers left (its int8 and int4 layers always run the
        # kernels), and its decode step can then be recorded (_record_cpu_graph).
        has_float_layers = any(isinstance(m, Linear) for m in self.model.modules())
        self.library_matmul = matmul == "library" and on_eager_cpu and has_float_layers
        logger.info("linear layers: %s", "library tiles" if self.library_matmul else "kernel")

    def _load_model(self) -> torch.nn.Module:
        model_cls = model_class(self.model_dir)
        # Built on the meta device (no random init), then filled from the checkpoint.
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device("meta"):
                model = model_cls(self.config)
        finally:
            torch.set_default_dtype(torch.float32)
        model = model.to_empty(device=self.device)
        model.init_derived_state()
        model.load_weights(self.model_dir)
        quantize_linears(model, self.quantization)
        if self.device.type == "cpu":
            move_to_huge_pages(model)  # every decode step streams through all of it
        return model.eval()

    def _forward_of(self, model: torch.nn.Module) -> Any:
        """The one torch.compile call site: the whole model, dynamic in the number of tokens,
        with attention as an opaque op (engine/models/attention.py). Compiled lazily by the
        first forward; the engine's warm-up makes that happen at startup."""
        if not self.compiled:
            return model
        # Every family's forward is LlamaModel.forward, one code object: Dynamo keeps one
        # compiled entry per model class on it, and past its limit (8) a fullgraph compile
        # fails. A process serving many families (or the tests) needs more.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        return torch.compile(model, dynamic=True, fullgraph=True)

    def _allocate_kv_cache(self) -> None:
        cfg = self.config
        shape = (cfg.num_key_value_heads, self.total_blocks, self.block_size, cfg.head_dim)
        # One tensor for all layers, viewed per layer: [2, layers, kv_heads, blocks, block_size,
        # head_dim]; head-major so that decode attention gathers contiguous per-head contexts.
        full_shape = (2, cfg.num_hidden_layers, *shape)
        if self.device.type == "cpu":
            self.kv_cache = huge_page_zeros(full_shape, self.kv_cache_dtype)
        else:
            self.kv_cache = torch.zeros(full_shape, dtype=self.kv_cache_dtype, device=self.device)
        self.kv_caches = [
            (self.kv_cache[0, i], self.kv_cache[1, i]) for i in range(cfg.num_hidden_layers)
        ]

    def sleep(self, level: int) -> None:
        """Frees the KV cache (its contents are lost: the engine forgets its prefix cache) and
        at level 2 the weights too, until wake_up(). Nothing may run meanwhile."""
        self.kv_cache = torch.empty(0, dtype=self.kv_cache_dtype, device=self.device)
        self.kv_caches = []
        self.cuda_graphs = self.cpu_graph = None  # the graphs hold the old cache's memory
        if level >= 2:
            self.model = None  # type: ignore[assignment]
            self._model_forward = None
        self.sleep_level = max(self.sleep_level, level)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        """Reloads what sleep() freed: the weights from the checkpoint, a zeroed KV cache."""
        if self.model is None:
            self.model = self._load_model()
            self._model_forward = self._forward_of(self.model)
        self._allocate_kv_cache()
        if self._graph_shape is not None:
            self.capture_graphs(*self._graph_shape)
        self.sleep_level = 0

    @torch.inference_mode()
    def capture_graphs(self, max_batch: int, max_model_len: int) -> None:
        """Record the decode step for batches up to max_batch: CUDA graphs on the GPU
        (engine/cuda_graphs.py), the kernel calls on the CPU (engine/cpu_graphs.py)."""
        self._graph_shape = (max_batch, max_model_len)
        if self.device.type == "cuda":
            self._capture_cuda_graphs(max_batch, max_model_len)
        else:
            self._record_cpu_graph(max_batch, max_model_len)

    def _record_cpu_graph(self, max_batch: int, max_model_len: int) -> None:
        """Eager runs with the C kernels only: a compiled model has no kernel calls to record,
        and the library GEMM (matmul = library) is a torch op the recording refuses."""
        if self.compiled or self.library_matmul or not self.one_decode_group:
            return
        model = self.model
        start = time.perf_counter()
        graph = CpuGraph(
            model.decoder_layers,
            lambda positions: model.layer_ropes(positions, self.dtype),
            self.kv_caches,
            rows=min(max_batch, CPU_GRAPH_MAX_ROWS),
            hidden_size=self.config.hidden_size,
            dtype=self.dtype,
            max_blocks_per_seq=-(-max_model_len // self.block_size),
            pad_block=self.num_blocks,
            block_size=self.block_size,
        )
        if graph.problems:
            logger.info("decode step not recorded, it runs eagerly: %s", ", ".join(graph.problems))
            return
        self.cpu_graph = graph
        logger.info(
            "recorded the decode step for batches up to %d: %d kernel calls in %.2f s",
            graph.rows,
            len(graph.calls),
            time.perf_counter() - start,
        )

    def _capture_cuda_graphs(self, max_batch: int, max_model_len: int) -> None:
        """Needs the Triton decode kernel, which reads only each sequence's own blocks (the
        torch twin would gather max_model_len tokens for every row)."""
        if not self.one_decode_group:
            logger.warning("no Triton decode kernel: the GPU decodes eagerly, without CUDA graphs")
            return
        if any(isinstance(m, SparseMoe) for m in self.model.modules()):
            # Routing decides on the host which experts run: no fixed graph to replay.
            logger.warning("mixture of experts: the GPU decodes eagerly, without CUDA graphs")
            return
        start = time.perf_counter()
        self.cuda_graphs = CudaGraphDecoder(
            self._model_forward,
            self.kv_caches,
            max_batch=max_batch,
            max_blocks_per_seq=-(-max_model_len // self.block_size),
            pad_slot=self.num_blocks * self.block_size,  # the spare block's first slot
            device=self.device,
        )
        logger.info(
            "captured CUDA graphs for decode batches %s in %.1f s%s",
            self.cuda_graphs.sizes,
            time.perf_counter() - start,
            " (including torch.compile)" if self.compiled else "",
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        attn: AttentionInputs,
        plan: LibraryPlan | None = None,
    ) -> torch.Tensor:
        """The model over one step's flat tokens: [num_tokens] -> hidden [num_tokens, hidden].
        plan: the step's rows for the library GEMM (step_inputs.library_plan); None: all to the
        kernel."""
        num_tokens = input_ids.shape[0]
        if self.cuda_graphs is not None and self.cuda_graphs.can_run(num_tokens, attn):
            return self.cuda_graphs.run(input_ids, positions, attn)
        if self.cpu_graph is not None and plan is None and self.cpu_graph.can_run(num_tokens, attn):
            return self.cpu_graph.run(self.model.embed(input_ids), positions, attn)
        if self.compiled and num_tokens < COMPILED_MIN_ROWS:
            # One compiled graph serves every size from COMPILED_MIN_ROWS up (dynamic shapes
            # specialize sizes 0 and 1); smaller steps are padded (the extra rows never reach
            # the KV cache) instead of compiling more graphs.
            pad = COMPILED_MIN_ROWS - num_tokens
            input_ids = torch.cat([input_ids, input_ids.new_zeros(pad)])
            positions = torch.cat([positions, positions.new_zeros(pad)])
        tiles = library_matmul(plan) if plan is not None else contextlib.nullcontext()
        with attention_context(attn, self.kv_caches), tiles:
            return self._model_forward(input_ids, positions)[:num_tokens]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [n, hidden_size] -> float32 logits [n, vocab] (rows packed under library)."""
        if not self.library_matmul:
            return self.model.compute_logits(hidden)
        with library_matmul(NO_POSITIONS):
            return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def run(self, out: SchedulerOutput) -> StepOutput:
        """One step: the sampled tokens (and logprobs where asked) of the sequences that reached
        their last known token."""
        inputs = prepare_inputs(out, self.block_size, self.device, self.one_decode_group)
        sample_seqs = inputs.sample_seqs
        if self.grammars is not None:
            # Structured-output masks are computed while the model runs.
            self.grammars.prefetch([s.seq_id for s in sample_seqs])
        plan = library_plan(out) if self.library_matmul else None
        hidden = self.forward(inputs.input_ids, inputs.positions, inputs.attn, plan)
        prompt_logprobs = self._prompt_logprobs(out, hidden)
        if not sample_seqs:
            return StepOutput({}, {}, prompt_logprobs)
        # One entry per sampled row: a sequence with drafts has several, consecutive. (Drafts
        # are proposed only for sequences without logits processors or penalties, whose
        # rows would depend on the drafts before them.)
        row_seqs = [s for s, n in zip(sample_seqs, inputs.sample_counts, strict=True)
                    for _ in range(n)]  # fmt: skip
        logits = self.compute_logits(hidden[inputs.sample_rows])  # [num_rows, vocab]
        apply_logits_processors(logits, row_seqs, self._token_rules, self.grammars)
        tensors = sampling_tensors(row_seqs, self.config.vocab_size, self.device)
        tokens = sample(logits, tensors, [self._generator(s) for s in row_seqs])
        row_tokens = tokens.tolist()
        sampled: dict[int, list[int]] = {}
        kept_rows: list[int] = []  # the rows whose tokens are kept
        row = 0
        for seq, count in zip(sample_seqs, inputs.sample_counts, strict=True):
            kept = accept_drafts(seq.spec_token_ids, row_tokens[row : row + count])
            sampled[seq.seq_id] = kept
            kept_rows += range(row, row + len(kept))
            row += count
        logprobs: dict[int, list[TokenLogprobs]] = {}
        wanted = [i for i in kept_rows if row_seqs[i].params.logprobs is not None]
        if wanted:
            # The distribution each token was drawn from, after processors and penalties.
            all_logprobs = sampling_logprobs(logits, tensors)
            entries = token_logprobs(
                all_logprobs[wanted],
                tokens[wanted],
                [row_seqs[i].params.logprobs for i in wanted],
                [row_seqs[i].params.logprob_token_ids for i in wanted],
            )
            for i, entry in zip(wanted, entries, strict=True):
                logprobs.setdefault(row_seqs[i].seq_id, []).append(entry)
        if self.grammars is not None:
            # Constrained sequences never have drafts: one token each.
            self.grammars.advance({seq_id: kept[0] for seq_id, kept in sampled.items()})
        return StepOutput(sampled, logprobs, prompt_logprobs)

    def _prompt_logprobs(
        self, out: SchedulerOutput, hidden: torch.Tensor
    ) -> dict[int, tuple[int, list[TokenLogprobs]]]:
        """Raw model logprobs of the prompt tokens this step's prefill chunks predict: the row
        of position p scores prompt token p + 1."""
        result: dict[int, tuple[int, list[TokenLogprobs]]] = {}
        row = 0
        for seq, num_new in zip(out.seqs, out.num_new_tokens, strict=True):
            start, k = seq.num_computed_tokens, seq.params.prompt_logprobs
            end = min(start + num_new, seq.num_prompt_tokens - 1)
            if k is not None and end > start:
                logits = self.compute_logits(hidden[row : row + end - start])
                targets = torch.tensor(seq.token_ids[start + 1 : end + 1], device=logits.device)
                entries = token_logprobs(logits.log_softmax(dim=-1), targets, [k] * (end - start))
                result[seq.seq_id] = (start + 1, entries)
            row += num_new
        return result

    def add(self, seq: Sequence) -> None:
        """Per-sequence state built once, when the sequence arrives."""
        rules = token_rules(seq.params, self.eos_token_ids, self.config.vocab_size, self.device)
        if rules is not None:
            self._token_rules[seq.seq_id] = rules

    def release(self, seq: Sequence) -> None:
        """Forget per-sequence state once a sequence is finished."""
        self._generators.pop(seq.seq_id, None)
        self._token_rules.pop(seq.seq_id, None)
        if self.grammars is not None:
            self.grammars.remove(seq.seq_id)

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        if seq.params.seed is None:
            return None
        gen = self._generators.get(seq.seq_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seq.params.seed)
            self._generators[seq.seq_id] = gen
        return gen


def accept_drafts(drafts: list[int], row_tokens: list[int]) -> list[int]:
    """The tokens a sequence keeps from a step that checked `drafts`: row_tokens[i] was
    sampled from the model's distribution after the last known token and drafts[:i].

    The drafts up to the first the model's token differs from, then the model's token there
    (or after the last draft). For a draft that is one fixed guess, this is exactly
    speculative sampling's rule: a draft d survives with probability p(d), and a rejection
    leaves a token drawn from p without d. So the output is distributed as without drafts,
    and greedy output is the same token for token."""
    accepted = 0
    while accepted < len(drafts) and row_tokens[accepted] == drafts[accepted]:
        accepted += 1
    return row_tokens[: accepted + 1]


def token_logprobs(
    logprobs: torch.Tensor,
    tokens: torch.Tensor,
    top_k: list[int],
    named: list[tuple[int, ...]] | None = None,
) -> list[TokenLogprobs]:
    """logprobs: [n, vocab]; tokens: [n] the chosen ones; top_k: how many of the most likely
    to list per row; named: the tokens each row reports whatever their rank. One host
    transfer for all rows."""
    named = named or [()] * len(top_k)
    chosen = logprobs.gather(1, tokens[:, None])  # [n, 1]
    ranks = (logprobs > chosen).sum(dim=1) + 1
    top_values, top_ids = logprobs.topk(max(top_k), dim=1)
    width = max(map(len, named))
    named_values: list[list[float]] = [[] for _ in named]
    if width:
        padded = [list(ids) + [0] * (width - len(ids)) for ids in named]
        index = torch.tensor(padded, device=logprobs.device)  # [n, width]
        named_values = logprobs.gather(1, index).tolist()
    rows = zip(
        tokens.tolist(),
        chosen[:, 0].tolist(),
        ranks.tolist(),
        top_ids.tolist(),
        top_values.tolist(),
        top_k,
        named,
        named_values,
        strict=True,
    )
    return [
        TokenLogprobs(
            token,
            value,
            rank,
            tuple(zip(ids[:n], values[:n], strict=True)),
            tuple(zip(asked, asked_values, strict=False)),  # drops the padding
        )
        for token, value, rank, ids, values, n, asked, asked_values in rows
    ]
