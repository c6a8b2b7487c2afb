"""Sequence classifiers and cross-encoders: any HF `*ForSequenceClassification` folder, run by
transformers. A cross-encoder is a classifier with one label whose logit scores a text pair read
jointly ([CLS] query [SEP] document [SEP]); the activation turns logits into what clients get:
a sigmoid for one label (a relevance in 0..1, as sentence-transformers' CrossEncoder gives),
a softmax over several."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from engine.models.encoder import padded_batch


class ClassifierModel:
    def __init__(self, model_dir: Path, *, dtype: torch.dtype, pad_token_id: int) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype)
            .to(self.device)
            .eval()
        )
        self.pad_token_id = pad_token_id
        config = self.model.config
        self.num_labels: int = config.num_labels
        self.id2label: dict[int, str] = {int(k): v for k, v in config.id2label.items()}
        self.max_model_len: int = config.max_position_embeddings

    @torch.inference_mode()
    def encode(
        self, batch: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> torch.Tensor:
        """Token ids per input -> [len(batch), num_labels] fp32 probabilities (the activated
        logits)."""
        inputs = padded_batch(batch, token_type_ids, self.pad_token_id, self.device)
        logits = self.model(**inputs).logits.float()
        return logits.sigmoid() if self.num_labels == 1 else logits.softmax(dim=-1)
