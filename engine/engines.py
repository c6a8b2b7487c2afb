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
from engine.loader import resolve_model_dir, resolve_task
from engine.models.classifier import ClassifierModel
from engine.models.encoder import EncoderModel
from engine.pooling_engine import PoolingEngine
from protocol.chat_template import load_chat_template

logger = logging.getLogger(__name__)


def load_engine(spec: ModelSpec, settings: Settings) -> AsyncEngine | PoolingEngine:
    """Loads and warms up the model (blocking: call it in a worker thread)."""
    started = time.monotonic()
    model_dir = resolve_model_dir(spec.model, settings.model_cache_dir)
    task = resolve_task(model_dir, spec.task)
    if task == "generate":
        engine: AsyncEngine | PoolingEngine = _generation_engine(spec, settings, model_dir)
    else:
        engine = _pooling_engine(spec, task, model_dir)
    logger.info("%s (%s) ready in %.1f s", spec.name, task, time.monotonic() - started)
    return engine


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
        models=(),
    )
    llm = LLMEngine(own, model_dir)
    llm.warm_up()  # logs its own time, with torch.compile's when that is on
    return AsyncEngine(
        llm,
        served_model_name=spec.name,
        model_path=spec.model,
        chat_template=_chat_template(spec, llm.tokenizer),
        chat_template_content_format=spec.chat_template_content_format,
        tool_call_parser=None if spec.tool_call_parser == "none" else spec.tool_call_parser,
    )


def _pooling_engine(spec: ModelSpec, task: str, model_dir: Path) -> PoolingEngine:
    transformers_logging.disable_progress_bar()  # a bar per load would clutter the server log
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Pooling models are small and their vectors are compared across servers: float32 unless
    # asked otherwise.
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model_cls = EncoderModel if task == "embed" else ClassifierModel
    model = model_cls(model_dir, dtype=dtype, pad_token_id=pad)
    model.encode([tokenizer("warm-up")["input_ids"]])  # first-call costs, not a user's
    return PoolingEngine(
        model,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        task=task,
        served_model_name=spec.name,
        model_path=spec.model,
        tokenizer=tokenizer,
        max_model_len=spec.max_model_len,
        chat_template=_chat_template(spec, tokenizer),
        chat_template_content_format=spec.chat_template_content_format,
    )


def _chat_template(spec: ModelSpec, tokenizer: object) -> str | None:
    if spec.chat_template:
        return load_chat_template(spec.chat_template)
    return getattr(tokenizer, "chat_template", None)
