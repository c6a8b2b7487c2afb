"""The model registry: HF `architectures` names to our model classes, and a clear refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.llama import LlamaModel
from engine.models.qwen2 import Qwen2Config, Qwen2Model
from engine.models.registry import ARCHITECTURES, UnsupportedArchitectureError, model_class

TINY = {
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def _checkpoint(tmp_path: Path, **config: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({**TINY, **config}))
    return tmp_path


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        ("LlamaForCausalLM", LlamaModel),
        ("MistralForCausalLM", LlamaModel),
        ("Qwen2ForCausalLM", Qwen2Model),
    ],
)
def test_each_architecture_name_maps_to_its_family(
    tmp_path: Path, architecture: str, expected: type
) -> None:
    assert model_class(_checkpoint(tmp_path, architectures=[architecture])) is expected


def test_a_config_without_architectures_is_read_as_llama(tmp_path: Path) -> None:
    assert model_class(_checkpoint(tmp_path)) is LlamaModel


def test_qwen2_has_a_qkv_bias_and_llama_only_when_its_config_says_so(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    assert Qwen2Model.config_class.from_dir(path).qkv_bias
    assert isinstance(Qwen2Model.config_class.from_dir(path), Qwen2Config)
    assert not LlamaModel.config_class.from_dir(path).qkv_bias
    path = _checkpoint(tmp_path, attention_bias=True)
    assert LlamaModel.config_class.from_dir(path).qkv_bias


def test_an_unsupported_architecture_is_named_with_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError) as info:
        model_class(_checkpoint(tmp_path, architectures=["GPTNeoXForCausalLM"]))
    message = str(info.value)
    assert "GPTNeoXForCausalLM" in message
    assert all(name in message for name in ARCHITECTURES)
