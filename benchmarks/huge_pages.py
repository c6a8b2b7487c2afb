"""Decode steps with the weights and KV cache on huge pages against ordinary pages, one process.

    python benchmarks/huge_pages.py                       # 1 sequence, 80-token prompt
    python benchmarks/huge_pages.py --seqs 32 --blocks 12
    python benchmarks/huge_pages.py --prompt-tokens 3000

Two engines of the embedded model (int4) are built in one process: the first as the server
builds it (engine/huge_pages.py), the second with that turned off. After their prompts, their
decode steps alternate in blocks of 5, and the medians are compared: machine noise hits both
alike, which separate runs cannot promise on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine.model_runner as model_runner  # noqa: E402
from configs.settings import EMBEDDED_MODEL, Settings  # noqa: E402
from engine.llm_engine import LLMEngine  # noqa: E402
from engine.loader import resolve_model_dir  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=30, help="blocks of 5 steps per engine")
    parser.add_argument("--prompt-tokens", type=int, default=80)
    args = parser.parse_args()
    settings = Settings(quantization="int4", enable_prefix_caching=False, kv_cache_memory_gb=0.5)
    model_dir = resolve_model_dir(EMBEDDED_MODEL, settings.model_cache_dir)
    engines = {"huge pages": LLMEngine(settings, model_dir)}
    model_runner.move_to_huge_pages = lambda model: None
    model_runner.huge_page_zeros = lambda shape, dtype: torch.zeros(shape, dtype=dtype)
    engines["small pages"] = LLMEngine(settings, model_dir)
    params = SamplingParams(max_tokens=10 * args.blocks + 20, temperature=0, ignore_eos=True)
    for engine in engines.values():
        engine.warm_up()
        for i in range(args.seqs):
            prompt = [1000 + 37 * i + j for j in range(args.prompt_tokens)]
            engine.add_request(f"seq-{i}", prompt, params)
        while engine.scheduler.num_waiting or any(
            s.num_output_tokens == 0 for s in engine.scheduler.running
        ):
            engine.step()
    step_ms: dict[str, list[float]] = {name: [] for name in engines}
    for block in range(args.blocks):
        order = list(engines.items())
        for name, engine in order if block % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(5):
                engine.step()
            step_ms[name].append((time.perf_counter() - start) / 5 * 1e3)
    huge, small = (statistics.median(step_ms[name]) for name in engines)
    print(
        f"{args.seqs} sequences after {args.prompt_tokens}-token prompts: a decode step takes "
        f"{huge:.2f} ms on huge pages, {small:.2f} ms on small ones: {huge / small:.3f}x"
    )


if __name__ == "__main__":
    main()
