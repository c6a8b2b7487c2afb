"""Streaming load generator for any OpenAI-compatible server.

    python benchmarks/load.py --base-url http://127.0.0.1:8000/v1 --model NAME \
        --concurrency 1 8 32 --max-tokens 128 --prompt-tokens 64 --json out.json

For each concurrency level C (run one after another) it sends N streaming requests
with at most C in flight and reports throughput, TTFT and inter-token latency.

From Python (compare.py does this): ``args = make_args(model=..., base_url=...)``, then
``run(args, sizes=[...])`` for the whole CLI run (returns the report), or
``run_one_level(args, prompts, concurrency)`` for one level (returns its summary dict).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

# Make the sibling module importable both as `python benchmarks/load.py` and when
# this file is imported from elsewhere (hf_generate.py, a notebook, a test).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompts import build_prompts  # noqa: E402

__all__ = ["build_prompts", "main", "make_args", "run", "run_one_level"]


@dataclass
class RequestResult:
    prompt_index: int
    ok: bool = False
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int = 0
    usage_tokens: int | None = None  # completion_tokens from the usage chunk, if sent
    prompt_tokens: int | None = None  # prompt_tokens from the usage chunk, if sent
    chunk_times_s: list[float] = field(default_factory=list)  # since request start
    itl_s: list[float] = field(default_factory=list)


def _request_body(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        # vLLM extension: generate exactly max_tokens so every server does equal work.
        "ignore_eos": True,
    }
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _chunk_text(obj: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in obj.get("choices") or []:
        if "delta" in choice:
            parts.append((choice.get("delta") or {}).get("content") or "")
        else:
            parts.append(choice.get("text") or "")
    return "".join(parts)


def _itl(chunk_times: list[float], output_tokens: int) -> list[float]:
    """Per-token gaps between content chunks.

    A chunk may carry several tokens (and only the total is known from usage), so
    the tokens are spread evenly over the chunks: each gap is divided by the mean
    tokens per chunk and counted that many times.
    """
    if len(chunk_times) < 2:
        return []
    per_chunk = max(output_tokens, 1) / len(chunk_times)
    repeat = max(1, round(per_chunk))
    out: list[float] = []
    for prev, cur in itertools.pairwise(chunk_times):
        out.extend([(cur - prev) / per_chunk] * repeat)
    return out


async def _one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], index: int
) -> RequestResult:
    res = RequestResult(prompt_index=index)
    start = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                res.error = f"HTTP {resp.status_code}: {text[:200]}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event: lines
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = orjson.loads(data)
                if "error" in obj:
                    res.error = f"stream error: {str(obj['error'])[:200]}"
                    return res
                if _chunk_text(obj):
                    res.chunk_times_s.append(time.perf_counter() - start)
                usage = obj.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    res.usage_tokens = int(usage["completion_tokens"])
                if usage and usage.get("prompt_tokens") is not None:
                    res.prompt_tokens = int(usage["prompt_tokens"])
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:300]
        return res
    res.e2e_s = time.perf_counter() - start
    if not res.chunk_times_s:
        res.error = "no content in stream"
        return res
    res.ok = True
    res.ttft_s = res.chunk_times_s[0]
    res.output_tokens = res.usage_tokens if res.usage_tokens else len(res.chunk_times_s)
    res.itl_s = _itl(res.chunk_times_s, res.output_tokens)
    return res


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (same as numpy's default); None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


async def run_level(
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    url: str,
    prompts: list[tuple[int, str]],
    concurrency: int,
) -> tuple[list[RequestResult], float]:
    queue = list(reversed(prompts))  # workers pop from the end: original order
    results: list[RequestResult] = []

    # C workers draining one queue keep exactly C requests in flight until it runs dry.
    async def worker() -> None:
        while queue:
            index, prompt = queue.pop()
            results.append(await _one_request(client, url, _request_body(args, prompt), index))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def summarize(concurrency: int, results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    ttft_ms = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    itl_ms = [x * 1000 for r in ok for x in r.itl_s]
    e2e_ms = [r.e2e_s * 1000 for r in ok if r.e2e_s is not None]
    tokens = sum(r.output_tokens for r in ok)
    prompt_counts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "wall_s": wall_s,
        "output_tokens": tokens,
        "output_tok_s": tokens / wall_s,
        "req_s": len(ok) / wall_s,
        # Server-reported prompt length (chat template included), when it sends usage.
        "prompt_tokens_mean": sum(prompt_counts) / len(prompt_counts) if prompt_counts else None,
    }
    for name, vals in (("ttft_ms", ttft_ms), ("itl_ms", itl_ms), ("e2e_ms", e2e_ms)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}"] = percentile(vals, q)
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


HEADER = (
    f"{'conc':>5} {'reqs':>5} {'errs':>5} {'out tok/s':>10} {'req/s':>7} "
    f"{'TTFT p50/p90/p99 ms':>24} {'ITL p50/p90/p99 ms':>24}"
)


def format_line(s: dict[str, Any]) -> str:
    ttft = "/".join(_fmt(s[f"ttft_ms_p{q}"]) for q in (50, 90, 99))
    itl = "/".join(_fmt(s[f"itl_ms_p{q}"]) for q in (50, 90, 99))
    return (
        f"{s['concurrency']:>5} {s['requests']:>5} {s['errors']:>5} "
        f"{s['output_tok_s']:>10.1f} {s['req_s']:>7.2f} {ttft:>24} {itl:>24}"
    )


def _url(args: argparse.Namespace) -> str:
    path = "/chat/completions" if args.endpoint == "chat" else "/completions"
    return args.base_url.rstrip("/") + path


def _client(args: argparse.Namespace, max_conns: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max_conns, max_keepalive_connections=max_conns)
    timeout = httpx.Timeout(args.timeout, connect=30.0)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout)


def level_prompts(sizes: list[int], prompt_tokens: int) -> tuple[str, list[list[tuple[int, str]]]]:
    """The warm-up prompt and one disjoint slice of (index, prompt) per level, so a
    server with prefix caching cannot reuse the previous level's prompts."""
    all_prompts = build_prompts(1 + sum(sizes), prompt_tokens)
    batches: list[list[tuple[int, str]]] = []
    offset = 1
    for n in sizes:
        batches.append(list(enumerate(all_prompts[offset : offset + n], start=offset)))
        offset += n
    return all_prompts[0], batches


async def _warm_up(client: httpx.AsyncClient, args: argparse.Namespace, prompt: str) -> None:
    warm = await _one_request(client, _url(args), _request_body(args, prompt), 0)
    if not warm.ok:
        print(f"warning: warm-up request failed: {warm.error}", file=sys.stderr)


async def measure_level(
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    batch: list[tuple[int, str]],
    concurrency: int,
) -> dict[str, Any]:
    """Run one level, print its line (and errors); return {"summary", "results"}."""
    results, wall_s = await run_level(client, args, _url(args), batch, concurrency)
    summary = summarize(concurrency, results, wall_s)
    print(format_line(summary), flush=True)
    for r in results:
        if r.error:
            print(f"  error (prompt {r.prompt_index}): {r.error}", file=sys.stderr)
    return {"summary": summary, "results": [asdict(r) for r in results]}


async def amain(args: argparse.Namespace, sizes: list[int] | None = None) -> dict[str, Any]:
    if sizes is None:
        sizes = [args.num_requests or max(8, 2 * c) for c in args.concurrency]
    warm_prompt, batches = level_prompts(sizes, args.prompt_tokens)
    # Never write the API key into a results file that may get shared.
    config = {**vars(args), "api_key": "***" if args.api_key else None, "sizes": sizes}
    report: dict[str, Any] = {"config": config, "levels": []}
    async with _client(args, max(args.concurrency)) as client:
        await _warm_up(client, args, warm_prompt)
        print(HEADER, flush=True)
        for c, batch in zip(args.concurrency, batches, strict=True):
            report["levels"].append(await measure_level(client, args, batch, c))
    return report


def run(args: argparse.Namespace, sizes: list[int] | None = None) -> dict[str, Any]:
    """The whole CLI run (warm-up, then every level in args.concurrency); returns the
    report. ``sizes`` (requests per level) overrides --num-requests."""
    return asyncio.run(amain(args, sizes))


def run_one_level(
    args: argparse.Namespace,
    prompts: list[tuple[int, str]],
    concurrency: int,
    warmup_prompt: str | None = None,
) -> dict[str, Any]:
    """Run a single level on the given (index, prompt) pairs, after one uncounted
    warm-up request when ``warmup_prompt`` is given; return its summary dict."""

    async def go() -> dict[str, Any]:
        async with _client(args, concurrency) as client:
            if warmup_prompt is not None:
                await _warm_up(client, args, warmup_prompt)
            return (await measure_level(client, args, prompts, concurrency))["summary"]

    return asyncio.run(go())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--num-requests",
        type=int,
        default=None,
        help="requests per level (default: max(8, 2*concurrency))",
    )
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--api-key", default=None)
    p.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request seconds")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    args = p.parse_args(argv)
    if any(c < 1 for c in args.concurrency):
        p.error("--concurrency values must be >= 1")
    return args


def make_args(**overrides: Any) -> argparse.Namespace:
    """CLI defaults with ``overrides`` applied (Python names: base_url, max_tokens, ...)."""
    args = parse_args(["--model", str(overrides.pop("model", ""))])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise TypeError(f"unknown load.py option: {key}")
        setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        args.json.write_bytes(orjson.dumps(report, default=str, option=orjson.OPT_INDENT_2))
    # A level where nothing succeeded means the server is down or misconfigured:
    # fail loudly so scripts running this notice.
    if any(lv["summary"]["errors"] == lv["summary"]["requests"] for lv in report["levels"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
