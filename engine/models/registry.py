"""Which of our model classes runs a checkpoint, by the `architectures` name in its
config.json. A new family is one file in this package and its line here."""

from __future__ import annotations

import json
from pathlib import Path

from engine.models.gemma2 import Gemma2Model
from engine.models.gemma3 import Gemma3Model
from engine.models.granite import GraniteModel
from engine.models.llama import LlamaModel
from engine.models.moe import MoeModel
from engine.models.olmo2 import Olmo2Model
from engine.models.qwen2 import Qwen2Model
from engine.models.qwen3 import Qwen3Model
from engine.models.qwen3_moe import Qwen3MoeModel

ARCHITECTURES: dict[str, type[LlamaModel]] = {
    "Gemma2ForCausalLM": Gemma2Model,
    "Gemma3ForCausalLM": Gemma3Model,
    "GraniteForCausalLM": GraniteModel,
    "LlamaForCausalLM": LlamaModel,
    "MistralForCausalLM": LlamaModel,
    "MixtralForCausalLM": MoeModel,
    "Olmo2ForCausalLM": Olmo2Model,
    # Llama with q/k/v and gate/up fused in the checkpoint and LongRoPE (engine/models/rope.py)
    "Phi3ForCausalLM": LlamaModel,
    "Qwen2ForCausalLM": Qwen2Model,
    "Qwen3ForCausalLM": Qwen3Model,
    "Qwen3MoeForCausalLM": Qwen3MoeModel,
}


class UnsupportedArchitectureError(ValueError):
    pass


def model_class(model_dir: Path) -> type[LlamaModel]:
    """The class for the checkpoint in model_dir; a config without `architectures` (as
    converted GGUF files may be) is read as Llama."""
    raw = json.loads((model_dir / "config.json").read_text())
    names = raw.get("architectures") or ["LlamaForCausalLM"]
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UnsupportedArchitectureError(
        f"unsupported architecture {', '.join(names)}: this server runs "
        f"{', '.join(sorted(ARCHITECTURES))}"
    )
