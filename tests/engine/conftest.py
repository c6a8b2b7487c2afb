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


def transformers_greedy(model, ids: list[int], num_tokens: int) -> list[int]:
    """The tokens transformers' own generate picks greedily after ids (exactly num_tokens)."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            input_ids,
            max_new_tokens=num_tokens,
            min_new_tokens=num_tokens,
            do_sample=False,
            attention_mask=torch.ones_like(input_ids),
        )
    return out[0, len(ids) :].tolist()


# Llama 3.1's rope scaling, with a pretraining length the test prompts pass.
LLAMA3_ROPE = dict(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
    rope_theta=500000.0,
)


FAMILIES = [
    "llama",
    "llama3_rope",
    "qwen2",
    "qwen3",
    "granite",
    "olmo2",
    "phi3",
    "mixtral",
    "qwen3_moe",
    "gemma2",
    "gemma3",
]


@pytest.fixture(params=FAMILIES)
def tiny_model_dir(request, tmp_path, smollm2_tokenizer):
    if request.param in ("llama", "llama3_rope"):
        rope = LLAMA3_ROPE if request.param == "llama3_rope" else None
        config = transformers.LlamaConfig(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=False, rope_scaling=rope, **TINY
        )
        model_cls = transformers.LlamaForCausalLM
    elif request.param == "phi3":
        # Phi-3.5's LongRoPE: served past its pretraining length (1 here, with its own
        # attention factor), so the long factors apply, as in transformers for sequences longer
        # than that; Phi-4-mini's partial rotary.
        head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
        rotary_pairs = head_dim // 4
        config = transformers.Phi3Config(
            vocab_size=len(smollm2_tokenizer),
            tie_word_embeddings=False,
            partial_rotary_factor=0.5,
            original_max_position_embeddings=1,
            sliding_window=6,  # as Phi-3-mini-4k has one (2047)
            rope_scaling=dict(
                type="longrope",
                attention_factor=1.2,
                short_factor=[1.0 + i / 4 for i in range(rotary_pairs)],
                long_factor=[1.5 + i for i in range(rotary_pairs)],
            ),
            pad_token_id=0,
            **TINY,
        )
        model_cls = transformers.Phi3ForCausalLM
    elif request.param == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=len(smollm2_tokenizer), tie_word_embeddings=True, **TINY
        )
        model_cls = transformers.Qwen2ForCausalLM
    elif request.param == "mixtral":
        config = transformers.MixtralConfig(
            vocab_size=len(smollm2_tokenizer),
            tie_word_embeddings=False,
            num_local_experts=4,
            num_experts_per_tok=2,
            **TINY,
        )
        model_cls = transformers.MixtralForCausalLM
    elif request.param == "qwen3_moe":
        # Layer 1 dense (mlp_only_layers), layer 0 experts of their own size, probabilities
        # of the chosen experts not renormalized.
        config = transformers.Qwen3MoeConfig(
            vocab_size=len(smollm2_tokenizer),
            tie_word_embeddings=True,
            head_dim=32,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=False,
            mlp_only_layers=[1],
            **TINY,
        )
        model_cls = transformers.Qwen3MoeForCausalLM
    elif request.param in ("gemma2", "gemma3"):
        # Windows shorter than the test sequences on the sliding layers (Gemma 2 alternates,
        # Gemma 3 here one global layer in three); Gemma 2's soft-capping, Gemma 3's two rope
        # bases (the global one with linear scaling).
        gemma = dict(
            vocab_size=len(smollm2_tokenizer),
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=6,
            **{**TINY, "num_hidden_layers": 3},
        )
        if request.param == "gemma2":
            config = transformers.Gemma2Config(
                attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **gemma
            )
            model_cls = transformers.Gemma2ForCausalLM
        else:
            config = transformers.Gemma3TextConfig(
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                },
                **gemma,
            )
            model_cls = transformers.Gemma3ForCausalLM
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
