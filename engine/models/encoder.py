"""Encoder models for embeddings: any HF encoder folder (BERT and relatives, run by
transformers) plus the pooling and normalisation its sentence-transformers files declare.

sentence-transformers describes a model as a pipeline in modules.json: the transformer, then a
Pooling module (1_Pooling/config.json: which tokens to pool, and how), then optionally
Normalize. `PoolingConfig` reads that; without those files a folder gets mean pooling and no
normalisation. A Dense (projection) module is not supported and is refused, so no model is
ever served with part of its pipeline missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from transformers import AutoModel

POOLING_MODES = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")
# 1_Pooling/config.json flag -> our mode name
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@attrs.frozen
class PoolingConfig:
    mode: str = attrs.field(default="mean", validator=attrs.validators.in_(POOLING_MODES))
    normalize: bool = False
    max_seq_length: int | None = None  # sentence-transformers' truncation length

    @classmethod
    def from_dir(cls, model_dir: Path) -> PoolingConfig:
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return cls()
        modules = json.loads(modules_file.read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        unsupported = [k for k in kinds if k not in _SUPPORTED_MODULES]
        if unsupported:
            raise ValueError(
                f"{model_dir}: unsupported sentence-transformers modules {unsupported}"
            )
        mode = "mean"
        for module in modules:
            if module["type"].endswith("Pooling"):
                raw = json.loads((model_dir / module["path"] / "config.json").read_text())
                chosen = [name for flag, name in _POOLING_FLAGS.items() if raw.get(flag)]
                if len(chosen) != 1:
                    raise ValueError(f"{model_dir}: expected one pooling mode, got {chosen}")
                mode = chosen[0]
        max_seq_length = None
        st_config = model_dir / "sentence_bert_config.json"
        if st_config.is_file():
            max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        return cls(mode=mode, normalize="Normalize" in kinds, max_seq_length=max_seq_length)


class EncoderModel:
    """Token ids in, one pooled vector per input out."""

    def __init__(self, model_dir: Path, *, dtype: torch.dtype, pad_token_id: int) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.pooling = PoolingConfig.from_dir(model_dir)
        self.pad_token_id = pad_token_id
        config = self.model.config
        self.hidden_size: int = config.hidden_size
        limits = [config.max_position_embeddings, self.pooling.max_seq_length]
        self.max_model_len: int = min(n for n in limits if n)

    @torch.inference_mode()
    def encode(
        self, batch: list[list[int]], token_type_ids: list[list[int]] | None = None
    ) -> torch.Tensor:
        """batch: token ids per input (each at most max_model_len) -> [len(batch), hidden] fp32."""
        inputs = padded_batch(batch, token_type_ids, self.pad_token_id, self.device)
        hidden = self.model(**inputs).last_hidden_state
        pooled = pool(hidden.float(), inputs["attention_mask"], self.pooling.mode)
        return F.normalize(pooled, p=2, dim=-1) if self.pooling.normalize else pooled


def padded_batch(
    batch: list[list[int]],
    token_type_ids: list[list[int]] | None,
    pad_token_id: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Right-padded [len(batch), longest] input_ids, attention_mask (and token_type_ids, which
    mark the second text of a pair for cross-encoders)."""
    longest = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(batch), longest), dtype=torch.int64)
    types = torch.zeros((len(batch), longest), dtype=torch.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        if token_type_ids is not None:
            types[row, : len(ids)] = torch.tensor(token_type_ids[row])
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = types
    return {name: t.to(device) for name, t in inputs.items()}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden: [batch, seq, dim]; mask: [batch, seq] (1 = token) -> [batch, dim]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":  # inputs are right-padded: the last real token of each row
        return hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).amax(dim=1)
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
