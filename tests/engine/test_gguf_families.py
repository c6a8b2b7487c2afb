"""A GGUF file of another family serves the way the embedded SmolLM2's does: the test writes
tiny random-weight Qwen2 and Qwen3 checkpoints as GGUF files (float32 tensors under llama.cpp's
names, SmolLM2's GGUF tokenizer), and the model converted from each decodes greedily exactly
like the transformers model it was written from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import pytest
import torch
import transformers

from configs.settings import Settings
from engine.llm_engine import LLMEngine
from engine.loader import EMBEDDED_GGUF, EMBEDDED_PACKAGE, resolve_model_dir
from engine.sampling_params import SamplingParams
from tests.engine.conftest import TINY, transformers_greedy

# HF tensor names (after "model.layers.{i}.") -> llama.cpp's (after "blk.{i}.").
LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
TOP_TENSORS = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


def _gguf_name(hf_name: str) -> str:
    stem, kind = hf_name.rsplit(".", 1)  # kind: weight | bias
    if stem in TOP_TENSORS:
        return f"{TOP_TENSORS[stem]}.{kind}"
    _, _, layer, rest = stem.split(".", 3)  # model.layers.{i}.{rest}
    return f"blk.{layer}.{LAYER_TENSORS[rest]}.{kind}"


def _write_gguf(path: Path, arch: str, model: transformers.PreTrainedModel) -> None:
    cfg = model.config
    smollm2 = Path(importlib.util.find_spec(EMBEDDED_PACKAGE).submodule_search_locations[0])
    tokenizer = gguf.GGUFReader(smollm2 / EMBEDDED_GGUF)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    for name, field in tokenizer.fields.items():
        if name.startswith("tokenizer."):
            vtype, *sub = field.types
            writer.add_key_value(name, field.contents(), vtype, sub[-1] if sub else None)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        writer.add_tensor(_gguf_name(name), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_a_gguf_of_another_family_decodes_like_the_model_it_was_written_from(
    family, tmp_path, smollm2_tokenizer
):
    # transformers' GGUF reader takes Qwen3's head_dim from its config's default (128).
    fields = dict(vocab_size=len(smollm2_tokenizer), tie_word_embeddings=True, head_dim=128)
    if family == "qwen2":
        config = transformers.Qwen2Config(**{**TINY, **fields, "head_dim": 16})
        model_cls = transformers.Qwen2ForCausalLM
    else:
        config = transformers.Qwen3Config(**TINY, **fields)
        model_cls = transformers.Qwen3ForCausalLM
    torch.manual_seed(0)
    hf_model = model_cls(config).eval()
    gguf_path = tmp_path / f"tiny-{family}.F32.gguf"
    _write_gguf(gguf_path, family, hf_model)

    model_dir = resolve_model_dir(str(gguf_path), str(tmp_path / "cache"))
    assert model_dir.parent == tmp_path / "cache"
    engine = LLMEngine(Settings(dtype="float32", kv_cache_memory_gb=0.01), model_dir)
    ids = smollm2_tokenizer.encode("Hello there, how are you")
    seq = engine.add_request(
        "g", ids, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    )
    while engine.has_work:
        engine.step()
    assert seq.output_token_ids == transformers_greedy(hf_model, ids, 12)
    # Served again, the converted folder is reused as it is.
    assert resolve_model_dir(str(gguf_path), str(tmp_path / "cache")) == model_dir
