"""The embedding encoder: the packaged all-MiniLM-L6-v2 gives sentence-transformers' vectors,
and the pooling modes and config parsing behave as sentence-transformers defines them."""

from __future__ import annotations

import json

import pytest
import torch

from configs.settings import EMBEDDED_EMBEDDING_MODEL
from engine.loader import resolve_model_dir
from engine.models.encoder import EncoderModel, PoolingConfig, pool

TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "hi",
    "Embeddings map text to vectors; similar meanings land close together. " * 30,  # > 256
]


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = EncoderModel(model_dir, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id)
    return model_dir, tokenizer, encoder


def test_minilm_vectors_equal_sentence_transformers(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir, tokenizer, encoder = minilm
    assert encoder.pooling == PoolingConfig(mode="mean", normalize=True, max_seq_length=256)
    assert encoder.hidden_size == 384 and encoder.max_model_len == 256
    ids = [
        tokenizer(t, truncation=True, max_length=encoder.max_model_len)["input_ids"] for t in TEXTS
    ]

    ours = encoder.encode(ids)

    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        TEXTS, convert_to_tensor=True
    )
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))


def test_an_input_encodes_alike_alone_and_padded_in_a_batch(minilm) -> None:
    _, tokenizer, encoder = minilm
    ids = [tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    batched = encoder.encode(ids)
    for row, one in enumerate(ids):
        torch.testing.assert_close(encoder.encode([one])[0], batched[row], atol=1e-6, rtol=0)


def test_pooling_modes() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # [batch, seq, dim]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the second row's last token is padding
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, mask, "lasttoken"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    assert torch.equal(pool(hidden, mask, "max"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    mean = torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0)])
    torch.testing.assert_close(pool(hidden, mask, "mean"), mean)
    sqrt_len = torch.stack([hidden[0].sum(0) / 3**0.5, hidden[1, :2].sum(0) / 2**0.5])
    torch.testing.assert_close(pool(hidden, mask, "mean_sqrt_len"), sqrt_len)


ST = "sentence_transformers.models."


def _write_st_folder(tmp_path, modules: list[dict], pooling: dict | None = None) -> None:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def test_pooling_config_from_sentence_transformers_files(tmp_path) -> None:
    _write_st_folder(
        tmp_path,
        [
            {"idx": 0, "name": "0", "path": "", "type": ST + "Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST + "Pooling"},
        ],
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
    )  # fmt: skip
    assert PoolingConfig.from_dir(tmp_path) == PoolingConfig(mode="cls", normalize=False)


def test_pooling_config_defaults_without_files_and_refuses_dense(tmp_path) -> None:
    assert PoolingConfig.from_dir(tmp_path) == PoolingConfig()
    _write_st_folder(
        tmp_path, [{"idx": 0, "name": "0", "path": "2_Dense", "type": ST + "Dense"}]
    )  # fmt: skip
    with pytest.raises(ValueError, match="Dense"):
        PoolingConfig.from_dir(tmp_path)
