"""The model registry: HF `architectures` names to our model classes, and a clear refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.models.llama import LlamaModel
from engine.models.qwen2 import Qwen2Config, Qwen2Model
from engine.models.qwen3_moe import Qwen3MoeModel
from engine.models.registry import ARCHITECTURES, UnsupportedArchitectureError, model_class
from engine.models.rope import rope_from_hf

TINY = {
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def _checkpoint(tmp_path: Path, **config: object) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, **config}))
    return tmp_path


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        ("LlamaForCausalLM", LlamaModel),
        ("MistralForCausalLM", LlamaModel),
        ("Phi3ForCausalLM", LlamaModel),
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


def test_a_phi3_checkpoint_in_its_published_form_reads_its_long_factors(tmp_path: Path) -> None:
    """Phi-3-mini-128k's config spells LongRoPE the old way ("su", the pretraining length at
    the top level); served at its full length, the long factors and the attention factor
    sqrt(1 + ln(ratio) / ln(original)) apply."""
    pairs = TINY["hidden_size"] // TINY["num_attention_heads"] // 2
    path = _checkpoint(
        tmp_path,
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_scaling={"type": "su", "short_factor": [1.0] * pairs, "long_factor": [4.0] * pairs},
    )
    rope = model_class(path).config_class.from_dir(path).rope
    plain = LlamaModel.config_class.from_dir(_checkpoint(tmp_path / "plain")).rope
    assert rope.inv_freq == pytest.approx([f / 4 for f in plain.inv_freq])
    assert rope.attention_factor == pytest.approx((1 + math.log(32) / math.log(4096)) ** 0.5)


def test_partial_rotary_rotates_only_the_leading_dimensions(tmp_path: Path) -> None:
    rope = LlamaModel.config_class.from_dir(_checkpoint(tmp_path, partial_rotary_factor=0.5)).rope
    assert rope.rotary_dim == TINY["hidden_size"] // TINY["num_attention_heads"] // 2


def test_a_rope_scaling_that_depends_on_the_running_length_is_refused(tmp_path: Path) -> None:
    path = _checkpoint(
        tmp_path, model_type="llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0}
    )
    with pytest.raises(ValueError, match="unsupported rope scaling 'dynamic'"):
        LlamaModel.config_class.from_dir(path)


def test_qwen3_moe_layers_are_sparse_where_its_config_says(tmp_path: Path) -> None:
    """Every decoder_sparse_step-th layer has experts, except those in mlp_only_layers;
    Mixtral's (no such fields) are all sparse and always renormalized."""
    fields = dict(num_hidden_layers=6, num_experts_per_tok=2, moe_intermediate_size=8)
    path = _checkpoint(
        tmp_path,
        architectures=["Qwen3MoeForCausalLM"],
        num_experts=4,
        decoder_sparse_step=2,
        mlp_only_layers=[3],
        norm_topk_prob=False,
        **fields,
    )
    cfg = model_class(path).config_class.from_dir(path)
    assert model_class(path) is Qwen3MoeModel
    assert (cfg.sparse_layers, cfg.num_experts, cfg.normalize_top_k) == ((1, 5), 4, False)
    assert cfg.moe_intermediate_size == 8
    path = _checkpoint(
        tmp_path / "mixtral",
        architectures=["MixtralForCausalLM"],
        num_local_experts=8,
        num_hidden_layers=2,
        num_experts_per_tok=2,
    )
    cfg = model_class(path).config_class.from_dir(path)
    assert (cfg.sparse_layers, cfg.num_experts, cfg.normalize_top_k) == ((0, 1), 8, True)
    assert cfg.moe_intermediate_size == TINY["intermediate_size"]


@pytest.mark.parametrize(
    ("fields", "windows"),
    [
        ({}, (0, 0, 0, 0)),
        ({"sliding_window": 8}, (8, 8, 8, 8)),  # Mistral v0.1, Phi-3, Mixtral
        ({"sliding_window": 8, "use_sliding_window": False}, (0, 0, 0, 0)),  # Qwen2 published
        ({"sliding_window": 8, "use_sliding_window": True, "max_window_layers": 2}, (0, 0, 8, 8)),
        (
            {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"] * 2},
            (8, 0, 8, 0),
        ),  # as transformers writes Gemma 2's
    ],
)
def test_each_layers_sliding_window_comes_from_the_config(
    tmp_path: Path, fields: dict, windows: tuple[int, ...]
) -> None:
    """Blocks are given back only when every layer has a window (kv_window)."""
    cfg = LlamaModel.config_class.from_dir(_checkpoint(tmp_path, num_hidden_layers=4, **fields))
    assert cfg.layer_windows == windows
    assert cfg.kv_window == (8 if all(windows) else 0)


def test_gemma_configs_as_published_get_their_layer_types_and_local_rope(tmp_path: Path) -> None:
    """Without `layer_types`, Gemma 2 alternates from a sliding first layer and Gemma 3 has one
    global layer per sliding_window_pattern; Gemma 3's local layers take rope_local_base_freq,
    its global ones rope_theta with the linear scaling."""
    path = _checkpoint(
        tmp_path / "gemma2",
        architectures=["Gemma2ForCausalLM"],
        model_type="gemma2",
        num_hidden_layers=4,
        sliding_window=8,
        head_dim=8,
    )
    assert model_class(path).config_class.from_dir(path).layer_windows == (8, 0, 8, 0)
    path = _checkpoint(
        tmp_path / "gemma3",
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_hidden_layers=6,
        sliding_window=8,
        sliding_window_pattern=3,
        head_dim=8,
        rope_theta=1e6,
        rope_local_base_freq=1e4,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
    )
    cfg = model_class(path).config_class.from_dir(path)
    assert cfg.layer_windows == (8, 8, 0, 8, 8, 0)
    plain = rope_from_hf({"rope_theta": 1e6}, 8).inv_freq
    assert cfg.rope.inv_freq == pytest.approx([f / 8 for f in plain])
    assert cfg.local_rope == rope_from_hf({"rope_theta": 1e4}, 8)
