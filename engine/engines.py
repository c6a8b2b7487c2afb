"""The engine behind one served model: generation (an LLMEngine driven by an AsyncEngine) or
pooling (an encoder or classifier behind a PoolingEngine's dynamic batching), chosen by task."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import attrs
import torch
from transformers import AutoTokenizer
from transformers.utils import logging as transformers_logging

from configs.settings import ModelSpec, Settings
from engine.async_engine import AsyncEngine
from engine.llm_engine import LLMEngine
from engine.loader import resolve_task
from engine.models.classifier import ClassifierModel
from engine.models.encoder import EncoderModel
from engine.pooling_engine import PoolingEngine

logger = logging.getLogger(__name__)


def load_engine(
    spec: ModelSpec, settings: Settings, model_dir: Path
) -> AsyncEngine | PoolingEngine:
    """Loads and warms up the model in model_dir (engine/loader.py's resolve_model_dir of
    spec.model; blocking: call it in a worker thread)."""
    started = time.monotonic()
    task = resolve_task(model_dir, spec.task)
    if task == "generate":
        engine: AsyncEngine | PoolingEngine = _generation_engine(spec, settings, model_dir)
    else:
        engine = _pooling_engine(spec, settings, task, model_dir)
    logger.info(
        "%s ready in %.1f s: %s",
        spec.name,
        time.monotonic() - started,
        _describe(engine, settings),
    )
    return engine


def _describe(engine: AsyncEngine | PoolingEngine, settings: Settings) -> str:
    """The startup line's summary of one model: what runs it, its KV cache, its warm-up."""
    if isinstance(engine, PoolingEngine):
        dtype = str(engine.encoder.model.dtype).removeprefix("torch.")
        return f"task {engine.task}, dtype {dtype}, max_model_len {engine.max_model_len}"
    llm = engine.engine
    runner = llm.runner
    kv_bytes = runner.num_blocks * runner.bytes_per_block
    warm_up = "-" if llm.warm_up_seconds is None else f"{llm.warm_up_seconds:.1f} s"
    return (
        f"task generate, dtype {str(runner.dtype).removeprefix('torch.')}, "
        f"quantization {runner.quantization}, max_model_len {llm.max_model_len}, "
        f"KV cache {runner.num_blocks} blocks x {llm.block_size} = "
        f"{runner.num_blocks * llm.block_size} tokens ({kv_bytes / 2**30:.2f} GiB "
        f"{str(runner.kv_cache_dtype).removeprefix('torch.')}), "
        f"prefix caching {'on' if llm.scheduler.block_manager.enable_prefix_caching else 'off'}, "
        f"warm-up {warm_up}{' with torch.compile' if runner.compiled else ''}"
        f"{', CUDA graphs' if runner.cuda_graphs is not None else ''}"
    )


def _generation_engine(spec: ModelSpec, settings: Settings, model_dir: Path) -> AsyncEngine:
    own = attrs.evolve(
        settings,
        model=spec.model,
        served_model_name=spec.name,
        task="generate",
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        chat_template=spec.chat_template,
        quantization=settings.quantization_for(spec.model),
        models=(),
    )
    llm = LLMEngine(own, model_dir)
    llm.warm_up()  # logs its own time, with torch.compile's when that is on
    kv_tokens = llm.runner.num_blocks * llm.block_size
    return AsyncEngine(
        llm,
        served_model_name=spec.name,
        # A full running batch plus the bounded queue; prompt tokens: what the KV cache holds
        # plus the queue's share.
        max_sequences=settings.max_num_seqs + settings.max_queued_sequences,
        max_tokens=kv_tokens + _queued_tokens(settings, kv_tokens),
    )


def _queued_tokens(settings: Settings, default: int) -> int:
    return default if settings.max_queued_tokens is None else settings.max_queued_tokens


def _pooling_engine(
    spec: ModelSpec, settings: Settings, task: str, model_dir: Path
) -> PoolingEngine:
    transformers_logging.disable_progress_bar()  # a bar per load would clutter the server log
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Pooling models are small and their vectors are compared across servers: float32 unless
    # asked otherwise.
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model_cls = EncoderModel if task == "embed" else ClassifierModel
    model = model_cls(model_dir, dtype=dtype, pad_token_id=pad)
    warm_up_started = time.monotonic()
    model.encode([tokenizer("warm-up")["input_ids"]])  # first-call costs, not a user's
    logger.info("%s: warm-up took %.1f s", spec.name, time.monotonic() - warm_up_started)
    return PoolingEngine(
        model,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        task=task,
        served_model_name=spec.name,
        tokenizer=tokenizer,
        max_model_len=spec.max_model_len,
        # No KV cache: as many prompt tokens as the sequence bound of a generation model.
        max_tokens=_queued_tokens(
            settings,
            (settings.max_num_seqs + settings.max_queued_sequences) * model.max_model_len,
        ),
    )
