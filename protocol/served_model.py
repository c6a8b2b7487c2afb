"""A served model as the handlers see it: its engine, and what the HTTP APIs add around it.

The engine takes token ids and sampling params (or inputs to pool) and knows nothing of chat
templates, tool parsers or generation defaults: those belong to the served model, built here
once at startup from its settings and checkpoint. The engine's side of the contract is the two
Protocols below, which the real engines and the tests' fakes both satisfy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from configs.settings import ModelSpec, Settings
from protocol.generation.chat_template import load_chat_template

if TYPE_CHECKING:
    from engine.admission import Admission
    from engine.outputs import RequestOutput
    from engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """What every engine gives the handlers: its tokenizer, limits and admission state."""

    served_model_name: str
    task: str  # "generate", "embed", "score" or "classify"
    tokenizer: Any
    max_model_len: int
    vocab_size: int
    admission: Admission  # the work in flight; check() raises EngineOverloadedError
    error: BaseException | None  # set once the engine died (it refuses everything then)
    step_started: float | None  # time.monotonic() when the running step began, else None


@runtime_checkable
class GenerationEngine(Engine, Protocol):
    def generate(
        self, request_id: str, prompts: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(index into prompts, delta) until every sequence finished; closing aborts."""
        ...


@runtime_checkable
class PoolingEngine(Engine, Protocol):
    encoder: Any  # the model; a classifier's carries id2label

    async def encode(
        self, inputs: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> Any:
        """One pooled vector per input: a float32 tensor [len(inputs), dim]."""
        ...


@attrs.frozen
class ServedModel:
    name: str  # the served model name clients send as `model`
    engine: Any  # a GenerationEngine or a PoolingEngine, by task
    model_path: str  # what was loaded (a folder, or the embedded default's name)
    chat_template: str | None = None
    chat_template_content_format: str = "auto"
    tool_call_parser: str | None = None  # for tool_choice "auto"; None: refused
    reasoning_parser: str | None = None  # splits replies into reasoning and content
    # Sampling defaults from the model's generation_config.json, for fields a request leaves
    # unset (engine/loader.py).
    generation_defaults: dict[str, Any] = attrs.field(factory=dict)
    created: int = attrs.field(factory=lambda: int(time.time()))

    # What handlers read of the engine, named as they use it.
    @property
    def task(self) -> str:
        return self.engine.task

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.vocab_size


def load_served_model(spec: ModelSpec, settings: Settings) -> ServedModel:
    """Loads the model's engine and builds what surrounds it (blocking: call it in a worker
    thread)."""
    # Imported here so importing the app (and its middleware tests) never loads torch.
    from engine.engines import load_engine
    from engine.loader import generation_defaults, resolve_model_dir

    model_dir = resolve_model_dir(spec.model, settings.model_cache_dir)
    # Read before the (slow) load, so a bad generation_config fails at once.
    defaults = generation_defaults(model_dir, settings.generation_config)
    engine = load_engine(spec, settings, model_dir)
    if engine.task != "generate":
        defaults = {}
    elif defaults:
        # As vLLM does: say which defaults a request without them gets, and how to turn it off.
        logger.info(
            "%s: default sampling parameters from generation_config.json: %s "
            '(generation_config = "vllm" ignores them)',
            spec.name,
            defaults,
        )
    if spec.chat_template:
        chat_template = load_chat_template(spec.chat_template)
    else:
        chat_template = getattr(engine.tokenizer, "chat_template", None)
    return ServedModel(
        name=spec.name,
        engine=engine,
        model_path=spec.model,
        chat_template=chat_template,
        chat_template_content_format=spec.chat_template_content_format,
        tool_call_parser=None if spec.tool_call_parser == "none" else spec.tool_call_parser,
        reasoning_parser=spec.reasoning_parser,
        generation_defaults=defaults,
    )
