"""Cross-encoders and classifiers (tiny random-weight BertForSequenceClassification folders):
the served task is read from the checkpoint, and scores equal sentence-transformers'
CrossEncoder, probabilities transformers' softmax."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from configs.settings import EMBEDDED_EMBEDDING_MODEL, EMBEDDED_MODEL, Settings
from engine.loader import resolve_model_dir, resolve_task
from engine.models.classifier import ClassifierModel

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of France?", "Bananas are yellow."),
    ("how do magnets work", "A magnet produces a magnetic field that attracts iron."),
]


def test_task_is_read_from_the_checkpoint(cross_encoder_dir, classifier_dir, tmp_path):
    assert resolve_task(cross_encoder_dir, "auto") == "score"
    assert resolve_task(classifier_dir, "auto") == "classify"
    assert resolve_task(resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, ""), "auto") == "embed"
    smollm2 = resolve_model_dir(EMBEDDED_MODEL, Settings().model_cache_dir)
    assert resolve_task(smollm2, "auto") == "generate"
    assert resolve_task(classifier_dir, "score") == "score"  # what the config says wins
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert resolve_task(tmp_path, "auto") == "embed"


def test_cross_encoder_scores_equal_sentence_transformers(cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    tokenizer = transformers.AutoTokenizer.from_pretrained(cross_encoder_dir)
    model = ClassifierModel(cross_encoder_dir, dtype=torch.float32, pad_token_id=0)
    encoded = tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS])
    scores = model.encode(encoded["input_ids"], encoded["token_type_ids"])  # [pairs, 1]
    expected = CrossEncoder(str(cross_encoder_dir), device="cpu").predict(PAIRS)
    torch.testing.assert_close(scores[:, 0], torch.tensor(expected), atol=1e-5, rtol=0)
    # The pair segments matter: without token types the scores change.
    assert not torch.allclose(scores, model.encode(encoded["input_ids"]), atol=1e-4)


def test_classifier_probabilities_are_transformers_softmax(classifier_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(classifier_dir)
    model = ClassifierModel(classifier_dir, dtype=torch.float32, pad_token_id=0)
    assert model.num_labels == 3
    assert model.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    texts = ["great movie", "it was fine I guess, nothing special", "awful"]
    probs = model.encode([tokenizer(t)["input_ids"] for t in texts])
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        for row, text in zip(probs, texts, strict=True):
            logits = hf(**tokenizer(text, return_tensors="pt")).logits[0]
            torch.testing.assert_close(row, logits.softmax(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("task", ["score", "classify"])
def test_padding_does_not_change_a_row(cross_encoder_dir, classifier_dir, task):
    model_dir = cross_encoder_dir if task == "score" else classifier_dir
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = ClassifierModel(model_dir, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id)
    short, long = tokenizer("hi")["input_ids"], tokenizer("a much longer input " * 5)["input_ids"]
    together = model.encode([short, long])
    torch.testing.assert_close(together[0], model.encode([short])[0], atol=1e-5, rtol=0)
