"""One process against two Ray Serve replicas, and the prefix router against Ray's default, on
a multi-turn chat workload.

    python benchmarks/replicas.py [--conversations 8] [--turns 4] [--concurrency 4]

For each setup it starts `lumen serve` (the embedded model, float32; one engine CPU per
replica), runs the same workload and stops it: each conversation has its own long system
prompt (~300 tokens) and `--turns` user turns, each sent with the whole history so far
(streamed, greedy, 32 new tokens), `--concurrency` conversations at a time. It reports per
setup the prefix-cache hit rate (hit tokens / looked-up tokens, summed over every replica's
metrics), TTFT of first and later turns (median), and turns per second, as one JSON table.
Numbers from one run are comparable with each other only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.server import Server  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SETUPS = {
    "1 process": ["--num-replicas=1"],
    "2 replicas, prefix router": ["--num-replicas=2", "--ray-request-router=prefix"],
    "2 replicas, Ray's default router": ["--num-replicas=2", "--ray-request-router=default"],
}
TOPICS = ["tides", "bread", "volcanoes", "chess", "bees", "glass", "trains", "comets"]


def system_prompt(index: int) -> str:
    topic = TOPICS[index % len(TOPICS)]
    rule = f"You are a patient tutor on {topic} (conversation {index}). Answer in one sentence. "
    return rule * 12  # ~1200 characters


async def conversation(
    client: httpx.AsyncClient, index: int, turns: int
) -> list[tuple[int, float]]:
    """(turn, TTFT in seconds) for each turn."""
    messages = [{"role": "system", "content": system_prompt(index)}]
    timings = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Tell me fact {turn + 1}."})
        body = {
            "model": MODEL,
            "messages": messages,
            "max_tokens": 32,
            "temperature": 0,
            "stream": True,
        }
        started, first, reply = time.perf_counter(), None, []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                for choice in orjson.loads(line[6:])["choices"]:
                    text = choice["delta"].get("content")
                    if text:
                        first = first or time.perf_counter()
                        reply.append(text)
        timings.append((turn, (first or time.perf_counter()) - started))
        messages.append({"role": "assistant", "content": "".join(reply)})
    return timings


def prefix_cache_counts(url: str, replicated: bool) -> tuple[float, float]:
    """(hit tokens, looked-up tokens) over every replica."""
    targets = [url]
    if replicated:
        groups = httpx.get(url + "/metrics/replicas").json()
        targets = [f"http://{t}" for group in groups for t in group["targets"]]
    hits = queries = 0.0
    for target in targets:
        for line in httpx.get(target + "/metrics").text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total"):
                queries += float(line.rsplit(" ", 1)[1])
    return hits, queries


async def workload(url: str, conversations: int, turns: int, concurrency: int) -> dict:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> list[tuple[int, float]]:
        async with gate:
            return await conversation(client, index, turns)

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(conversations)))
        elapsed = time.perf_counter() - started
    first = [ttft for timings in results for turn, ttft in timings if turn == 0]
    later = [ttft for timings in results for turn, ttft in timings if turn > 0]
    return {
        "ttft_first_turn_ms": round(1000 * statistics.median(first), 1),
        "ttft_later_turns_ms": round(1000 * statistics.median(later), 1),
        "turns_per_s": round(conversations * turns / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()
    report = {}
    for name in args.setups:
        serve = ["embedded:smollm2", "--models=[]", "--dtype=float32", *SETUPS[name]]
        server = Server({}, Path(f"/tmp/replicas-{len(report)}.log"), lumen_serve=serve)
        try:
            server.wait_ready(timeout=600)
            result = asyncio.run(
                workload(server.url, args.conversations, args.turns, args.concurrency)
            )
            hits, queries = prefix_cache_counts(server.url, "--num-replicas=2" in SETUPS[name])
            result["prefix_cache_hit_rate"] = round(hits / queries, 3) if queries else None
        finally:
            server.stop()
        report[name] = result
        print(name, result, flush=True)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
