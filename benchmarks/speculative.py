"""Speculative decoding (ngram prompt lookup) against plain decoding, in process, where it pays
and where it does not.

    python benchmarks/speculative.py                      # k = 4, lookup 2..5, 1 and 8 seqs
    python benchmarks/speculative.py --k 8 --seqs 1

Two workloads on the embedded SmolLM2-135M (default settings: dtype auto, no quantization),
greedy, up to 160 tokens each:
- `edit`: "fix the typos in this text" over a ~170-word passage; the reply mostly copies it,
  so prompt lookup finds the continuation;
- `free`: open-ended writing (a story, an explanation), where little repeats.
Each runs with N copies at once (distinct prompts per copy), once plain and once with drafts,
on two engines built side by side. Greedy outputs are checked identical; the table gives
output tokens/s over the whole run (prefills included), the speed-up of decoding alone (after
the last prefill), tokens per sequence-step, and the draft acceptance rate. One run: compare
the ratios, not the absolute figures (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

PASSAGE = (
    "Teh annual report for the northern distrct shows that rainfall was well below average "
    "for the third year in a row. Farmers in the valley have responded by planting crops that "
    "need less water, such as sorghum and millet, and by sharing irrigation schedules so that "
    "the river is not drained during the hotest weeks of summer. The water board has also "
    "repaired more than forty kilometres of old canals, which were loosing almost a quarter "
    "of there flow to leaks. Despite these efforts, the reservoir held only sixty percent of "
    "its capacity at the end of August, and the board warns that restrictions on garden "
    "watering may return next year if the winter is dry. Residents are asked to report "
    "broken pipes promptly and to collect rain water wherever they can."
)
TOPICS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle gear system works, for a curious ten-year-old.",
    "Describe a busy market in a coastal town at dawn.",
    "Write a letter from a traveller to a friend about a long train journey.",
    "Explain why the sky changes colour at sunset.",
    "Tell the story of a small robot learning to paint.",
    "Describe the life of a honeybee over one summer day.",
    "Write a speech for the opening of a new public library.",
]


def chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def prompts(workload: str, n: int) -> list[str]:
    if workload == "edit":
        # Distinct per copy (a numbered request) so no copy shares another's reply verbatim.
        return [chat(f"Request {i}: fix the spelling mistakes in this text and return it "
                     f"in full:\n\n{PASSAGE}") for i in range(n)]  # fmt: skip
    return [chat(TOPICS[i % len(TOPICS)]) for i in range(n)]


def run(engine, texts: list[str], max_tokens: int) -> tuple[dict[str, list[int]], dict]:
    """Tokens per request, and the run's seconds, sequence-steps that produced tokens, draft
    tokens checked and accepted."""
    from engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    tokens: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        engine.add_request(str(i), engine.tokenizer(text)["input_ids"], params)
        tokens[str(i)] = []
    stats = {"seq_steps": 0, "drafts": 0, "accepted": 0}
    start = time.perf_counter()
    decoding_since = None  # when the last prefill finished: decoding alone from there
    while engine.has_work:
        for seq, output in engine.step():
            tokens[seq.request_id] += output.new_token_ids
            stats["seq_steps"] += 1
        if decoding_since is None and all(tokens.values()):
            decoding_since = time.perf_counter()
            stats["tokens_before_decoding"] = sum(map(len, tokens.values()))
        for num_drafts, num_accepted in engine.last_step.draft_acceptance:
            stats["drafts"] += num_drafts
            stats["accepted"] += num_accepted
    end = time.perf_counter()
    stats["seconds"], stats["decode_seconds"] = end - start, end - decoding_since
    return tokens, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    parser.add_argument("--lookup-min", type=int, default=2)
    parser.add_argument("--lookup-max", type=int, default=5)
    parser.add_argument("--seqs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()

    from linear_cost import cpu_description

    from configs.settings import EMBEDDED_MODEL, Settings
    from engine.llm_engine import LLMEngine
    from engine.loader import resolve_model_dir

    spec = json.dumps({
        "method": "ngram", "num_speculative_tokens": args.k,
        "prompt_lookup_min": args.lookup_min, "prompt_lookup_max": args.lookup_max,
    })  # fmt: skip
    model_dir = resolve_model_dir(EMBEDDED_MODEL, Settings().model_cache_dir)
    # Prefix caching off: the second run of a prompt would otherwise skip its prefill.
    plain = LLMEngine(Settings(enable_prefix_caching=False), model_dir)
    drafted = LLMEngine(Settings(enable_prefix_caching=False, speculative_config=spec), model_dir)
    plain.warm_up()
    drafted.warm_up()
    print(f"CPU: {cpu_description()}; dtype {plain.runner.dtype}; {spec}\n")
    print(
        "| workload | seqs | plain tok/s | ngram tok/s | speed-up | decode speed-up "
        "| tokens/seq-step | accepted |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for workload in ("edit", "free"):
        for n in args.seqs:
            texts = prompts(workload, n)
            expected, plain_stats = run(plain, texts, args.max_tokens)
            got, stats = run(drafted, texts, args.max_tokens)
            assert got == expected, "greedy output differs with drafts"
            total = sum(map(len, expected.values()))
            rate = f"{stats['accepted'] / stats['drafts']:.2f}" if stats["drafts"] else "-"
            plain_s, drafted_s = plain_stats["seconds"], stats["seconds"]
            # Decode tok/s: the tokens after every prefill finished, over the time since.
            plain_decode = (total - plain_stats["tokens_before_decoding"]) / plain_stats[
                "decode_seconds"
            ]
            drafted_decode = (total - stats["tokens_before_decoding"]) / stats["decode_seconds"]
            print(
                f"| {workload} | {n} | {total / plain_s:.1f} | {total / drafted_s:.1f} | "
                f"{plain_s / drafted_s:.2f}x | {drafted_decode / plain_decode:.2f}x | "
                f"{total / stats['seq_steps']:.2f} | {rate} |"
            )


if __name__ == "__main__":
    main()
