from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2 as an HF folder (converted from the packaged GGUF on first use)."""
    from configs.settings import EMBEDDED_MODEL, Settings
    from engine.loader import resolve_model_dir

    return resolve_model_dir(EMBEDDED_MODEL, Settings().model_cache_dir)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)
