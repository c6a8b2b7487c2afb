"""Tiny random-weight checkpoints, saved by transformers as any local HF folder would be."""

from __future__ import annotations

import pytest
import torch
import transformers

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    # Large weights make the logits decisive, so argmax never hinges on rounding.
    initializer_range=0.5,
)


@pytest.fixture(params=["llama", "qwen2", "qwen3", "granite", "olmo2"])
def tiny_model_dir(request, tmp_path, smollm2_tokenizer):
    if request.param == "llama":
        config = transformers.LlamaConfig(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=False, **TINY
        )
        model_cls = transformers.LlamaForCausalLM
    elif request.param == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=True, **TINY
        )
        model_cls = transformers.Qwen2ForCausalLM
    elif request.param == "olmo2":
        config = transformers.Olmo2Config(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=False, **TINY
        )
        model_cls = transformers.Olmo2ForCausalLM
    elif request.param == "granite":
        config = transformers.GraniteConfig(
            vocab_size=len(smollm2_tokenizer),
            tie_word_embeddings=True,
            embedding_multiplier=1.5,
            residual_multiplier=0.7,
            attention_multiplier=0.3,
            logits_scaling=2.0,
            **TINY,
        )
        model_cls = transformers.GraniteForCausalLM
    else:
        # Its own head_dim (Qwen3's default is 128, not hidden_size / heads).
        config = transformers.Qwen3Config(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=True, head_dim=32, **TINY
        )
        model_cls = transformers.Qwen3ForCausalLM
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():  # norms start at ones: give theirs values, so loading them counts
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    return tmp_path, model
