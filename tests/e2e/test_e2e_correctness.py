"""Greedy output equals transformers, and does not depend on what else is in the batch."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import openai
import pytest

from tests.e2e.server import MODEL_NAME

pytestmark = pytest.mark.e2e

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "The three primary colors are",
]


def test_greedy_equals_transformers_generate(client, smollm2_dir, smollm2_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    for prompt in PROMPTS:
        ids = smollm2_tokenizer(prompt, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1] :]
        expected_text = smollm2_tokenizer.decode(expected, skip_special_tokens=True)
        resp = client.completions.create(
            model=MODEL_NAME, prompt=prompt, max_tokens=24, temperature=0
        )
        assert resp.choices[0].text == expected_text, prompt


@pytest.mark.parametrize(
    "configuration", ["auth_server", "library_matmul_server", "bf16_kv_cache_server"]
)
def test_batch_of_32_gives_the_same_text_as_one_at_a_time(configuration, request):
    """In the default configuration (bf16 where the CPU has it, else float32; prompt tokens
    through the library GEMM where auto picks it), with prompt tokens through the library
    GEMM and prompts cut into chunks differently when they come together, and with a float32
    model over a bfloat16 KV cache."""
    chosen = request.getfixturevalue(configuration)
    api_key = "token-abc123" if configuration == "auth_server" else "unused"
    prompts = [f"Write one sentence about the number {i}." for i in range(32)]

    async def ask(client: openai.AsyncOpenAI, prompt: str) -> str:
        resp = await client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=24,
            temperature=0,
        )
        return resp.choices[0].message.content

    async def main() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=chosen.url + "/v1", api_key=api_key, max_retries=0)
        alone = [await ask(client, p) for p in prompts]
        together = await asyncio.gather(*(ask(client, p) for p in prompts))
        return alone, list(together)

    alone, together = asyncio.run(main())
    assert together == alone


def test_a_bfloat16_kv_cache_serves_and_says_so_in_the_metrics(bf16_kv_cache_server):
    """The cache's type in vllm:cache_config_info; a long prompt (prefilled in chunks that read
    the bf16 cache back) answers the same streamed as whole, and frees its blocks."""
    client = openai.OpenAI(base_url=bf16_kv_cache_server.url + "/v1", api_key="x", max_retries=0)
    text = " ".join(f"Item {i} is a {['red', 'green', 'blue'][i % 3]} box." for i in range(60))
    messages = [{"role": "user", "content": text + " What colour is item 7?"}]
    whole = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0
    )
    assert whole.usage.prompt_tokens > 500 and whole.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == whole.choices[0].message.content
    with httpx.Client(base_url=bf16_kv_cache_server.url, timeout=60) as http:
        assert re.search(
            r'^vllm:cache_config_info\{[^}]*cache_dtype="bfloat16"',
            http.get("/metrics").text,
            re.MULTILINE,
        )
        assert _metric(http, "vllm:kv_cache_usage_perc") == 0


def _metric(http: httpx.Client, name: str) -> float:
    text = http.get("/metrics").text
    match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_client_disconnect_aborts_the_request(server, http):
    body = {
        "model": MODEL_NAME,
        "prompt": "Tell me everything",
        "max_tokens": 2000,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
            assert _metric(http, "vllm:num_requests_running") == 1
    # Closing the connection mid-stream must abort the request and free its KV blocks.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            _metric(http, "vllm:num_requests_running") == 0
            and _metric(http, "vllm:kv_cache_usage_perc") == 0
        ):
            break
        time.sleep(0.1)
    assert _metric(http, "vllm:num_requests_running") == 0
    assert _metric(http, "vllm:kv_cache_usage_perc") == 0
    assert 'finished_reason="abort"' in http.get("/metrics").text
    # ... and the server keeps serving.
    resp = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    assert resp.status_code == 200
