"""The real engines satisfy the interface the protocol handlers use (protocol/served_model.py);
tests/protocol/test_served_model.py holds the tests' fake engine to the same interface."""

from __future__ import annotations

import torch

from configs.settings import EMBEDDED_EMBEDDING_MODEL, Settings
from engine.async_engine import AsyncEngine
from engine.llm_engine import LLMEngine
from engine.loader import resolve_model_dir
from engine.models.encoder import EncoderModel
from engine.pooling_engine import PoolingEngine
from protocol.served_model import GenerationEngine
from protocol.served_model import PoolingEngine as PoolingEngineInterface


def test_the_generation_engine_has_what_the_handlers_use(smollm2_dir) -> None:
    settings = Settings(dtype="float32", max_model_len=128, kv_cache_memory_gb=0.01)
    llm = LLMEngine(settings, smollm2_dir)
    engine = AsyncEngine(llm, served_model_name="m")
    assert isinstance(engine, GenerationEngine)
    assert not isinstance(engine, PoolingEngineInterface)


def test_the_pooling_engine_has_what_the_handlers_use() -> None:
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = EncoderModel(model_dir, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id)
    engine = PoolingEngine(encoder, max_num_batched_tokens=512, tokenizer=tokenizer)
    assert isinstance(engine, PoolingEngineInterface)
    assert not isinstance(engine, GenerationEngine)
