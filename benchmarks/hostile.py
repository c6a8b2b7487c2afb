"""Well-behaved clients beside a hostile one: their latency with and without it.

    python benchmarks/hostile.py                    # starts a server itself (the default config)
    python benchmarks/hostile.py --url http://127.0.0.1:8000 --api-key KEY

Two phases of the same length. In each, `--clients` well-behaved clients send short chat
completions back to back (each `--max-tokens` tokens, streamed) and record how long each
took. In the second phase one hostile client also sends, in a loop, every kind of request that
once froze, crashed or starved the server: 2,000 prompts x n=8192, n=4096, a JSON schema
nested 400 levels, tool-call arguments nested 3,000 levels, a websocket upgrade, a request chat
template of 10^10 loop iterations, a 16 MB prompt, stop strings and logit_bias at their caps,
invalid UTF-8, and a burst of /health?deep=true. Reports the well-behaved p50 / p99 latency of
both phases and their ratio, the hostile requests' statuses, and exits 1 if any answer was a
5xx or a well-behaved request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import server_url  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _nested_schema(depth: int) -> bytes:
    """A JSON schema nested `depth` objects deep, as JSON text (deeper than orjson writes)."""
    return b'{"type":"object","properties":{"a":' * depth + b'{"type":"string"}' + b"}}" * depth


def _hostile_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(name, path, extra headers, body) of each hostile request."""
    chat = [{"role": "user", "content": "Hi"}]
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("2000 prompts x n=8192", "/v1/completions", {"prompt": [[1, 2]] * 2000, "n": 8192}),
        ("n=4096", "/v1/completions", {"prompt": "Hi", "n": 4096, "max_tokens": 64}),
        (
            "request chat template",
            "/v1/chat/completions",
            {"messages": chat, "chat_template": loops},
        ),
        ("16 MB prompt", "/v1/completions", {"prompt": "word " * 3_000_000, "max_tokens": 4}),
        (
            "stop strings at the cap",
            "/v1/completions",
            {"prompt": "Once", "stop": ["z" * 1024] * 64, "max_tokens": 32},
        ),
        (
            "logit_bias of 40000 tokens",
            "/v1/completions",
            {"prompt": "Once", "logit_bias": {str(i): 0.1 for i in range(40000)}, "max_tokens": 32},
        ),
    ]
    requests = [(name, path, {}, orjson.dumps(body)) for name, path, body in bodies]
    schema = b'{"type": "json_schema", "json_schema": {"name": "x", "schema": %s}}'
    messages = b'[{"role": "user", "content": "Hi"}'
    requests.append(
        (
            "schema nested 400",
            "/v1/chat/completions",
            {},
            b'{"messages": %s], "response_format": %s}' % (messages, schema % _nested_schema(400)),
        )
    )
    # Tool-call arguments (a JSON string, as clients send them) nested 3,000 levels, in the
    # message history: the template and the tool parser read them.
    deep_args = "[" * 3000 + "]" * 3000
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": deep_args}}
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [call]}]
    body = {"messages": history, "max_tokens": 4}
    requests.append(("tool arguments nested 3000", "/v1/chat/completions", {}, orjson.dumps(body)))
    requests.append(("invalid UTF-8", "/v1/completions", {}, b'{"prompt": "\xff\xfe"}'))
    websocket = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    requests.append(("websocket upgrade", "/v1/chat/completions", websocket, b""))
    return requests


async def _well_behaved(
    client: httpx.AsyncClient, until: float, max_tokens: int, latencies: list[float], errors: list
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    pass
            if response.status_code != 200:
                errors.append(f"status {response.status_code}")
                continue
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
            continue
        latencies.append(time.monotonic() - started)


async def _hostile(client: httpx.AsyncClient, until: float, statuses: dict[str, list[int]]) -> None:
    requests = _hostile_requests()
    while time.monotonic() < until:
        for name, path, headers, body in requests:
            if time.monotonic() >= until:
                return
            method = "GET" if "upgrade" in headers else "POST"
            try:
                response = await client.request(
                    method,
                    path,
                    content=body or None,
                    headers={"content-type": "application/json", **headers},
                )
                statuses[name].append(response.status_code)
            except httpx.HTTPError as exc:
                statuses[name].append(-1)
                print(f"hostile {name}: {exc!r}", file=sys.stderr)
        deep = [client.get("/health", params={"deep": "true"}) for _ in range(20)]
        for response in await asyncio.gather(*deep, return_exceptions=True):
            code = response.status_code if isinstance(response, httpx.Response) else -1
            statuses["20 x /health?deep=true"].append(code)


async def _phase(
    url: str, headers: dict[str, str], seconds: float, clients: int, max_tokens: int, hostile: bool
) -> tuple[list[float], list[str], dict[str, list[int]]]:
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[str, list[int]] = collections.defaultdict(list)
    limits = httpx.Limits(max_connections=clients + 32)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=300, limits=limits
    ) as client:
        until = time.monotonic() + seconds
        tasks = [
            _well_behaved(client, until, max_tokens, latencies, errors) for _ in range(clients)
        ]
        if hostile:
            tasks.append(_hostile(client, until, statuses))
        await asyncio.gather(*tasks)
    return latencies, errors, statuses


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server; without it one is started")
    parser.add_argument("--api-key", help="the server's key, if it has one")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with server_url(args.url, Path("/tmp/lumen-hostile.log")) as url:
        results = {
            hostile: asyncio.run(
                _phase(url, headers, args.seconds, args.clients, args.max_tokens, hostile)
            )
            for hostile in (False, True)
        }
        healthy = httpx.get(url + "/health", headers=headers, timeout=30).status_code

    problems = []
    p99 = {}
    for hostile, (latencies, errors, statuses) in results.items():
        label = "with a hostile client" if hostile else "clean"
        p99[hostile] = _percentile(latencies, 99)
        print(
            f"{label:>22}: {len(latencies)} well-behaved requests, p50 "
            f"{_percentile(latencies, 50):.3f} s, p99 {p99[hostile]:.3f} s, {len(errors)} failed"
        )
        problems += [f"well-behaved ({label}): {e}" for e in errors]
        for name, codes in statuses.items():
            counts = ", ".join(f"{c} x{n}" for c, n in sorted(collections.Counter(codes).items()))
            print(f"    hostile {name}: {counts}")
            problems += [f"hostile {name}: {c}" for c in set(codes) if c >= 500 or c < 0]
    print(f"p99 with the hostile client / clean: {p99[True] / p99[False]:.2f}")
    if healthy != 200:
        problems.append(f"/health afterwards: {healthy}")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
