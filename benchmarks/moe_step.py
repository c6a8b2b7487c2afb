"""Engine steps of a mixture-of-experts model against a dense model of equal active size.

    python benchmarks/moe_step.py
    python benchmarks/moe_step.py --dtype bfloat16 --experts 8 --top-k 2

Two random-weight checkpoints, written by transformers into a temp folder: a Mixtral (every
layer `--experts` experts of `--expert-size`, `--top-k` per token) and a Llama whose MLP is
`--top-k` times an expert's width, so both do the same multiply-adds per token. Same
attention, layers and widths otherwise. Timed in process (no HTTP), prefix caching off:
decode ms/step with 1 and 16 sequences after 80-token prompts, and one 463-token prefill.
Each model runs in its own process; compare ratios within one run (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _write_checkpoints(folder: Path, args: argparse.Namespace) -> None:
    import torch
    import transformers

    from configs.settings import EMBEDDED_MODEL, Settings
    from engine.loader import resolve_model_dir

    tokenizer_dir = resolve_model_dir(EMBEDDED_MODEL, Settings().model_cache_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    shared = dict(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64 // 4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    configs = {
        "moe": transformers.MixtralConfig(
            intermediate_size=args.expert_size,
            num_local_experts=args.experts,
            num_experts_per_tok=args.top_k,
            **shared,
        ),
        "dense": transformers.LlamaConfig(
            intermediate_size=args.expert_size * args.top_k, **shared
        ),
    }
    for name, config in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)


def measure(model_dir: Path, dtype: str) -> dict[str, float]:
    from engine_step import _decode_ms, _prefill_ms

    from configs.settings import Settings
    from engine.llm_engine import LLMEngine

    settings = Settings(dtype=dtype, enable_prefix_caching=False, kv_cache_memory_gb=0.5)
    start = time.perf_counter()
    engine = LLMEngine(settings, model_dir)
    engine.warm_up()
    return {
        "startup_s": time.perf_counter() - start,
        "decode1_ms": _decode_ms(engine, 1, 64),
        "decode16_ms": _decode_ms(engine, 16, 32),
        "prefill463_ms": _prefill_ms(engine),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dtype", default="float32", help="bfloat16 where the CPU has AVX-512 BF16")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--expert-size", type=int, default=1792)
    p.add_argument("--measure", help=argparse.SUPPRESS)  # one model, in this process
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.dtype)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        _write_checkpoints(Path(tmp), args)
        for name in ("dense", "moe"):
            out = subprocess.run(
                [sys.executable, __file__, "--dtype", args.dtype, "--measure", f"{tmp}/{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[name] = json.loads(out.strip().splitlines()[-1])
            print(name, results[name], flush=True)
    print("\n| model | decode 1 seq (ms/step) | decode 16 seqs (ms/step) | prefill 463 (ms) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        cells = [
            f"{r[k]:.1f} ({r[k] / results['dense'][k]:.2f}×)"
            for k in ("decode1_ms", "decode16_ms", "prefill463_ms")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
