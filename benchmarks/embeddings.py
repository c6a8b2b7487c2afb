"""Embeddings/s through the server vs sentence-transformers' `encode` on the same inputs.

    python benchmarks/embeddings.py            # --texts 512 --words 24 --batch-size 32

One run, one after the other on the same cores:
1. sentence-transformers, in this process: `model.encode(texts, batch_size=32)` on the
   packaged all-MiniLM-L6-v2 (one warm-up call, then the best of --repeats timed calls).
2. lumen, started as `python -m hypercorn asgi.app:app` with its default configuration (chat
   model + MiniLM), then the same texts through /v1/embeddings two ways:
   - "batch 32": requests of 32 inputs each, one in flight at a time;
   - "32 clients": 32 concurrent requests of one input each, which the server's dynamic
     batching groups into shared forward passes.
Prints a table with the ratio of each to sentence-transformers (goal >= 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

from compare import free_port, server  # noqa: E402
from prompts import build_prompts  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def sentence_transformers_rate(texts: list[str], batch_size: int, repeats: int) -> float:
    from sentence_transformers import SentenceTransformer

    from configs.settings import EMBEDDED_EMBEDDING_MODEL
    from engine.loader import resolve_model_dir

    model = SentenceTransformer(str(resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")), device="cpu")
    model.encode(texts[:batch_size], batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


async def _batched(client: httpx.AsyncClient, texts: list[str], batch_size: int) -> None:
    for i in range(0, len(texts), batch_size):
        resp = await client.post(
            "/v1/embeddings", json={"model": MODEL, "input": texts[i : i + batch_size]}
        )
        resp.raise_for_status()


async def _concurrent(client: httpx.AsyncClient, texts: list[str], clients: int) -> None:
    queue = list(reversed(texts))

    async def worker() -> None:
        while queue:
            resp = await client.post("/v1/embeddings", json={"model": MODEL, "input": queue.pop()})
            resp.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(clients)))


def server_rates(url: str, texts: list[str], batch_size: int, repeats: int) -> dict[str, float]:
    async def measure(run) -> float:  # noqa: ANN001 - one of the two coroutines above
        limits = httpx.Limits(max_connections=batch_size)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            await run(client, texts[:batch_size], batch_size)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                await run(client, texts, batch_size)
                best = min(best, time.perf_counter() - start)
            return len(texts) / best

    return {
        f"lumen, batch {batch_size} per request": asyncio.run(measure(_batched)),
        f"lumen, {batch_size} concurrent clients of 1 input": asyncio.run(measure(_concurrent)),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--words", type=int, default=24, help="about this many tokens * 0.75 per text")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    texts = build_prompts(args.texts, round(args.words / 0.75))

    reference = sentence_transformers_rate(texts, args.batch_size, args.repeats)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="lumen-embeddings-")) / "server.log"
    cmd = [sys.executable, "-m", "hypercorn", "asgi.app:app", "--bind", f"127.0.0.1:{port}"]
    with server("lumen", cmd, f"http://127.0.0.1:{port}/health", log, 300):
        rates = server_rates(f"http://127.0.0.1:{port}", texts, args.batch_size, args.repeats)

    print(f"\n{len(texts)} texts of ~{args.words} words, best of {args.repeats}:\n")
    print("| system | embeddings/s | vs sentence-transformers |\n|---|---|---|")
    print(
        f"| sentence-transformers encode(batch_size={args.batch_size}) | {reference:.0f} | 1.00 |"
    )
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / reference:.2f} |")


if __name__ == "__main__":
    main()
