"""Engine step time with and without 32 grammar-constrained sequences in the batch.

    python benchmarks/structured_step.py        # --seqs 32 --tokens 64

In process, the embedded model with the default settings: --seqs requests decoding --tokens
tokens each (ignore_eos), once unconstrained and once each under a JSON schema that keeps
every step constrained (an array of at least --tokens strings). Reports the median decode step
(after every prefill is done) and, for the constrained run, the median time the grammar masks
took inside a step (llguidance computing all rows' bitmasks, plus applying them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llguidance  # noqa: E402

from configs.settings import load_settings  # noqa: E402
from engine.llm_engine import LLMEngine  # noqa: E402
from engine.loader import resolve_model_dir  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402


def run(engine: LLMEngine, seqs: int, tokens: int, grammar: str | None) -> list[float]:
    """Decode step times in ms (steps where every sequence is decoding)."""
    prompt = engine.tokenizer.encode("List some fruits as JSON:")
    for i in range(seqs):
        params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True, grammar=grammar)
        engine.add_request(f"r{i}", prompt + [i + 10], params)
    times = []
    while engine.has_work:
        start = time.perf_counter()
        engine.step()
        step = engine.last_step
        if step is not None and sum(step.num_new_tokens) == len(step.seqs) == seqs:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seqs", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    settings = load_settings()
    engine = LLMEngine(settings, resolve_model_dir(settings.model, settings.model_cache_dir))
    engine.warm_up()
    schema = {
        "type": "object",
        "properties": {
            "fruits": {"type": "array", "items": {"type": "string"}, "minItems": args.tokens}
        },
        "required": ["fruits"],
    }
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={"whitespace_flexible": False}
    )
    grammars = engine.runner.grammars
    mask_ms: list[float] = []
    apply = grammars.apply

    def timed_apply(*a, **k):  # noqa: ANN002, ANN003 - a pass-through timer
        start = time.perf_counter()
        apply(*a, **k)
        mask_ms.append((time.perf_counter() - start) * 1e3)

    run(engine, 2, 4, grammar)  # warm-up: builds llguidance's tokenizer, compiles a grammar
    free = run(engine, args.seqs, args.tokens, None)
    grammars.apply = timed_apply
    constrained = run(engine, args.seqs, args.tokens, grammar)
    grammars.apply = apply
    median = statistics.median
    print(f"{args.seqs} sequences, {args.tokens} tokens each, median decode step:")
    print(
        f"| batch | step ms | ratio |\n|---|---|---|\n| unconstrained | {median(free):.2f} | 1.00 |"
    )
    print(
        f"| all JSON-schema constrained | {median(constrained):.2f} | "
        f"{median(constrained) / median(free):.2f} |"
    )
    print(f"grammar masks inside a constrained step: median {median(mask_ms):.2f} ms")


if __name__ == "__main__":
    main()
