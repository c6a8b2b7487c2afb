"""Engine steps timed in process (no HTTP): where the kernels and compile settings pay.

    python benchmarks/engine_step.py            # every variant below, one after another
    python benchmarks/engine_step.py --variant c-kernels --quantization int4 --decode-seqs 1

Three measurements per variant, on the embedded SmolLM2-135M, prefix caching off:
- decode, 1 sequence (int4 weights): ms per step over 128 steps after an 80-token prompt;
- decode, 32 sequences (bf16): ms per step over 64 steps after 80-token prompts;
- prefill (bf16): ms for one 463-token prompt (the chat prompt length compare.py uses).

Variants: `c-kernels` (the default: C kernels, eager), `torch-twins` (LUMEN_NATIVE_KERNELS=0:
the torch reference kernels), `compiled` (torch_compile on, so the torch twins traced by
inductor, with the C attention as an opaque op). Each variant runs in its own process, one
after another; compare ratios within one run only (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "c-kernels": ({}, False),
    "torch-twins": ({"LUMEN_NATIVE_KERNELS": "0"}, False),
    "compiled": ({}, True),
}
PROMPT_TOKENS, PREFILL_TOKENS = 80, 463


def _engine(quantization: str, compiled: bool):
    sys.path.insert(0, str(REPO_ROOT))
    from configs.settings import EMBEDDED_MODEL, Settings
    from engine.llm_engine import LLMEngine
    from engine.loader import resolve_model_dir

    settings = Settings(
        quantization=quantization, enable_prefix_caching=False, torch_compile=compiled
    )
    engine = LLMEngine(settings, resolve_model_dir(EMBEDDED_MODEL, settings.model_cache_dir))
    engine.warm_up()
    return engine


def _decode_ms(engine, num_seqs: int, steps: int) -> float:
    from engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=steps + 1, temperature=0, ignore_eos=True)
    for i in range(num_seqs):
        engine.add_request(f"d{i}", [1000 + 37 * i + j for j in range(PROMPT_TOKENS)], params)
    while any(s.num_output_tokens == 0 for s in engine.scheduler.running) or (
        engine.scheduler.num_waiting
    ):
        engine.step()  # prefills
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    elapsed = time.perf_counter() - start
    while engine.has_work:
        engine.step()
    return elapsed / steps * 1e3


def _prefill_ms(engine, repeats: int = 3) -> float:
    from engine.sampling_params import SamplingParams

    times = []
    for r in range(repeats + 1):
        ids = [2000 + 13 * r + j for j in range(PREFILL_TOKENS)]
        engine.add_request(f"p{r}", ids, SamplingParams(max_tokens=1, temperature=0))
        start = time.perf_counter()
        while engine.has_work:
            engine.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2] * 1e3  # median, after one warm-up


def measure(variant: str) -> dict[str, float]:
    env, compiled = VARIANTS[variant]
    os.environ.update(env)
    result: dict[str, float] = {}
    start = time.perf_counter()
    engine = _engine("int4", compiled)
    result["startup_s"] = time.perf_counter() - start
    result["decode1_int4_ms"] = _decode_ms(engine, 1, 128)
    engine = _engine("none", compiled)
    result["decode32_bf16_ms"] = _decode_ms(engine, 32, 64)
    result["prefill463_bf16_ms"] = _prefill_ms(engine)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", choices=list(VARIANTS), help="run one variant, print JSON")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
        return
    results = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        print(variant, results[variant], flush=True)
    base = results["c-kernels"]
    print("\n| variant | decode 1 seq, int4 (ms/step) | decode 32 seqs, bf16 (ms/step) | "
          f"prefill {PREFILL_TOKENS} tokens, bf16 (ms) | startup incl. warm-up (s) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for variant, r in results.items():
        cells = [
            f"{r[k]:.2f} ({r[k] / base[k]:.2f}×)"
            for k in ("decode1_int4_ms", "decode32_bf16_ms", "prefill463_bf16_ms")
        ]
        print(f"| {variant} | " + " | ".join(cells) + f" | {r['startup_s']:.1f} |")


if __name__ == "__main__":
    main()
