"""Soak: hundreds of concurrent streams, a third abandoned at random points; then the server
must be idle and clean, and answer a new request at once.

    python benchmarks/soak.py --url http://127.0.0.1:8000      # a running server
    python benchmarks/soak.py                                   # starts one itself

Half of the abandoned streams are dropped after a random number of chunks, half after a random
delay whatever their state (many are still queued then). Afterwards it checks, from /metrics
and /load: no request running or waiting, KV-cache usage 0, no HTTP request in progress but
the scrape itself, no more event-loop tasks than before the run, and that one more request
completes. Exit status 1 if any check fails. tests/e2e/test_e2e_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import attrs
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

# Importable both as `python benchmarks/soak.py` and as benchmarks.soak (the e2e test).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import server_url  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@attrs.define
class SoakReport:
    completed: int = 0
    cancelled: int = 0
    refused: int = 0  # 429: past the admission limit, as designed
    failed: list[str] = attrs.field(factory=list)
    seconds: float = 0.0
    idle: dict[str, float] = attrs.field(factory=dict)  # the checks' readings afterwards
    problems: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems


async def _stream(
    client: httpx.AsyncClient, i: int, max_tokens: int, cancel_after_chunks: int | None
) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Tell me fact number {i} about the sea."}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code == 429:
            return "refused"
        if response.status_code != 200:
            return f"status {response.status_code}: {(await response.aread())[:200]!r}"
        chunks = 0
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return "completed"
            if "error" in orjson.loads(line[len("data: ") :]):  # not a reply that says "error"
                return f"error event: {line[:200]}"
            chunks += 1
            if cancel_after_chunks is not None and chunks >= cancel_after_chunks:
                return "cancelled"  # leaving the block closes the connection mid-stream
    return "ended without [DONE]"


async def _with_deadline(coro: asyncio.Future, delay: float | None) -> str:
    try:
        if delay is None:
            return await coro
        return await asyncio.wait_for(coro, delay)
    except TimeoutError:
        return "cancelled"
    except httpx.HTTPError as exc:  # the server dropped the connection: a failure to report
        return f"{type(exc).__name__}: {exc}"


def _readings(metrics_text: str) -> dict[str, float]:
    """Sums of the series that must return to zero, plus the event-loop task count."""
    wanted = {
        "vllm:num_requests_running": "running",
        "vllm:num_requests_waiting": "waiting",
        "vllm:kv_cache_usage_perc": "kv_cache_usage",
        "http_requests_in_progress": "http_in_progress",
        "lumen_event_loop_tasks": "event_loop_tasks",
    }
    readings = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in wanted:
                readings[wanted[sample.name]] += sample.value
    return readings


async def _idle_readings(
    client: httpx.AsyncClient, baseline_tasks: float, settle_s: float
) -> dict[str, float]:
    """Readings once the server has settled: aborts reach the engine between steps, and the
    server tears closed connections down a few seconds later. Polled until all is back to
    idle, or `settle_s` runs out (then the readings show what did not come back)."""
    deadline = time.monotonic() + settle_s
    while True:
        readings = _readings((await client.get("/metrics")).text)
        readings["server_load"] = (await client.get("/load")).json()["server_load"]
        busy = readings["running"] + readings["waiting"] + readings["server_load"]
        settled = readings["event_loop_tasks"] <= baseline_tasks
        if busy == 0 and readings["kv_cache_usage"] == 0 and settled:
            return readings
        if time.monotonic() > deadline:
            return readings
        await asyncio.sleep(0.5)


async def soak(
    url: str,
    *,
    streams: int = 300,
    max_tokens: int = 32,
    cancel_fraction: float = 1 / 3,
    seed: int = 0,
    settle_s: float = 30.0,
) -> SoakReport:
    rng = random.Random(seed)
    report = SoakReport()
    # The load runs on its own connections, closed before the idle checks: an open
    # connection holds a server task, which is not a leak.
    async with httpx.AsyncClient(base_url=url, timeout=60) as probe:
        baseline = _readings((await probe.get("/metrics")).text)
        limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            jobs = []
            for i in range(streams):
                after_chunks, delay = None, None
                if rng.random() < cancel_fraction:
                    if rng.random() < 0.5:
                        after_chunks = rng.randint(1, max_tokens)
                    else:
                        delay = rng.uniform(0.0, 3.0)
                jobs.append(_with_deadline(_stream(client, i, max_tokens, after_chunks), delay))
            began = time.perf_counter()
            outcomes = await asyncio.gather(*jobs)
            report.seconds = time.perf_counter() - began
        for outcome in outcomes:
            if outcome == "completed":
                report.completed += 1
            elif outcome == "cancelled":
                report.cancelled += 1
            elif outcome == "refused":
                report.refused += 1
            else:
                report.failed.append(outcome)

        report.idle = await _idle_readings(probe, baseline["event_loop_tasks"], settle_s)
        for name in ("running", "waiting", "kv_cache_usage", "server_load"):
            if report.idle[name] != 0:
                report.problems.append(f"{name} is {report.idle[name]} after the soak, not 0")
        if report.idle["http_in_progress"] != 1:  # the /metrics scrape itself
            report.problems.append(f"{report.idle['http_in_progress']} HTTP requests in progress")
        if report.idle["event_loop_tasks"] > baseline["event_loop_tasks"]:
            report.problems.append(
                f"event-loop tasks grew from {baseline['event_loop_tasks']:.0f} to "
                f"{report.idle['event_loop_tasks']:.0f}"
            )
        after = await probe.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=30,
        )
        if after.status_code != 200 or not after.json()["choices"][0]["finish_reason"]:
            report.problems.append(f"a request after the soak failed: {after.status_code}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server; without it one is started")
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with server_url(args.url, Path("/tmp/lumen-soak.log")) as url:
        report = asyncio.run(
            soak(url, streams=args.streams, max_tokens=args.max_tokens, seed=args.seed)
        )
    print(
        f"{args.streams} streams in {report.seconds:.1f} s: {report.completed} completed, "
        f"{report.cancelled} cancelled, {report.refused} refused (429), "
        f"{len(report.failed)} failed"
    )
    print("afterwards:", ", ".join(f"{k}={v:g}" for k, v in report.idle.items()))
    for problem in report.failed + report.problems:
        print("PROBLEM:", problem)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
