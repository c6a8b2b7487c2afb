"""Accuracy of weight-only quantization (and of a bfloat16 KV cache) against the unquantized
model, on the embedded model.

Reports, for each of none / int8 / int4 (same dtype), with each KV cache dtype asked for:
- perplexity on a fixed English text (teacher-forced, one prefill), and its change vs "none";
- greedy agreement: for fixed chat prompts, how many of the first N greedy tokens equal the
  unquantized model's (up to the first difference), and how many continuations match exactly.

    python benchmarks/quant_accuracy.py [--dtype bfloat16] [--max-tokens 64]
    python benchmarks/quant_accuracy.py --dtype float32 --kv-cache-dtypes auto bfloat16
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # configs, engine

from configs.settings import Settings  # noqa: E402
from engine.block_manager import BlockManager  # noqa: E402
from engine.llm_engine import LLMEngine  # noqa: E402
from engine.loader import resolve_model_dir  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402
from engine.scheduler import SchedulerOutput  # noqa: E402
from engine.sequence import Sequence  # noqa: E402
from engine.step_inputs import prepare_inputs  # noqa: E402

TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined a screw press with movable metal type and an oil-based ink. Before "
    "his workshop in Mainz produced its famous Bible, books were copied by hand, and a single "
    "volume could take a scribe many months. Printing made books cheaper and faster to "
    "produce, and within fifty years presses were running in more than two hundred cities "
    "across Europe. The spread of printed pamphlets carried news, scientific ideas and "
    "religious arguments to readers who had never owned a book, and historians often "
    "describe the press as one of the inventions that shaped the modern world. Literacy "
    "rose, spelling became more uniform, and scholars could compare identical copies of a "
    "text instead of arguing over the errors of different scribes."
)
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of a paperclip.",
    "How do I boil an egg?",
    "What is 17 times 3?",
    "Describe a cat to someone who has never seen one.",
    "Give me a tip for learning a new language.",
]


def perplexity(engine: LLMEngine, token_ids: list[int]) -> float:
    """exp(mean negative log-likelihood) of every token given the ones before it."""
    runner = engine.runner
    seq = Sequence("ppl", token_ids, SamplingParams(max_tokens=1))
    blocks = BlockManager(runner.num_blocks, runner.block_size, enable_prefix_caching=False)
    blocks.allocate(seq, len(token_ids))
    out = SchedulerOutput(seqs=[seq], num_new_tokens=[len(token_ids)])
    with torch.inference_mode():
        inputs = prepare_inputs(out, runner.block_size, runner.device, runner.one_decode_group)
        hidden = runner.forward(inputs.input_ids, inputs.positions, inputs.attn)
        logits = runner.model.compute_logits(hidden[:-1])  # [n - 1, vocab]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(token_ids[1:]))
    return math.exp(nll.item())


def greedy(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    seqs = [engine.add_request(f"g{i}", p, params) for i, p in enumerate(prompts)]
    while engine.has_work:
        engine.step()
    return [s.output_token_ids for s in seqs]


def agreement(reference: list[int], other: list[int]) -> int:
    n = 0
    for a, b in zip(reference, other, strict=True):
        if a != b:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--kv-cache-dtypes", nargs="+", default=["auto"], choices=["auto", "bfloat16"]
    )
    args = parser.parse_args()

    rows = []
    reference: list[list[int]] | None = None
    base_ppl = None
    runs = [(q, kv) for q in ("none", "int8", "int4") for kv in args.kv_cache_dtypes]
    for mode, kv_cache_dtype in runs:
        settings = Settings(
            dtype=args.dtype,
            quantization=mode,
            kv_cache_dtype=kv_cache_dtype,
            kv_cache_memory_gb=0.25,
            max_model_len=2048,
        )
        engine = LLMEngine(settings, resolve_model_dir(settings.model, settings.model_cache_dir))
        tok = engine.tokenizer
        ppl = perplexity(engine, tok.encode(TEXT))
        prompts = [
            tok.encode(
                tok.apply_chat_template(
                    [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
                ),
                add_special_tokens=False,
            )
            for q in QUESTIONS
        ]
        outputs = greedy(engine, prompts, args.max_tokens)
        if reference is None:
            reference, base_ppl = outputs, ppl
        agree = [agreement(r, o) for r, o in zip(reference, outputs, strict=True)]
        rows.append(
            (
                mode if kv_cache_dtype == "auto" else f"{mode}, KV cache {kv_cache_dtype}",
                ppl,
                ppl / base_ppl - 1,
                sum(agree) / len(agree),
                sum(a == args.max_tokens for a in agree),
            )
        )

    print(f"dtype {args.dtype}; {len(QUESTIONS)} chat prompts, {args.max_tokens} greedy tokens")
    print(
        "| quantization | perplexity | vs none | mean tokens equal to none before the first "
        "difference | identical continuations |"
    )
    print("|---|---|---|---|---|")
    for mode, ppl, delta, mean_agree, identical in rows:
        print(
            f"| {mode} | {ppl:.3f} | {delta:+.1%} | {mean_agree:.1f} / {args.max_tokens} | "
            f"{identical} / {len(QUESTIONS)} |"
        )


if __name__ == "__main__":
    main()
