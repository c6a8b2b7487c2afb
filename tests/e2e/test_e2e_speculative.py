"""`lumen serve --speculative-config '{"method": "ngram", ...}'` on the embedded model, with the
openai client: replies as without speculation (whole == streamed, greedy), the drafts'
acceptance in vLLM's spec_decode metrics, and a bad config refused at startup."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import _clean_environ, _lumen, running

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOURCE = (
    "Our office will be closed on Monday for the public holiday. Support requests sent over "
    "the weekend will be answered on Tuesday morning, in the order they arrived."
)
MESSAGES = [{"role": "user", "content": f"Repeat this text exactly: {SOURCE}"}]
SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("speculative")
    args = [
        "embedded:smollm2",
        "--models=[]",
        "--dtype=float32",
        f"--speculative-config={json.dumps(SPEC)}",
    ]
    with running({}, folder / "server.log", lumen_serve=args) as server:
        yield server


def metric(text: str, name: str, **labels: str) -> float:
    wanted = {"model_name": MODEL, "engine": "0", **labels}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return sample.value
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_replies_match_whole_and_streamed_and_metrics_count_drafts(server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=60, temperature=0
    )
    text = whole.choices[0].message.content
    assert "closed on Monday" in text
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=60,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == text
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    # Several tokens arrive per step: fewer content chunks than tokens.
    assert len(pieces) < usage.completion_tokens

    metrics = httpx.get(server.url + "/metrics").text
    drafts = metric(metrics, "vllm:spec_decode_num_drafts_total")
    draft_tokens = metric(metrics, "vllm:spec_decode_num_draft_tokens_total")
    accepted = metric(metrics, "vllm:spec_decode_num_accepted_tokens_total")
    per_pos = [
        metric(metrics, "vllm:spec_decode_num_accepted_tokens_per_pos_total", position=str(p))
        for p in range(SPEC["num_speculative_tokens"])
    ]
    assert 0 < accepted <= draft_tokens <= drafts * SPEC["num_speculative_tokens"]
    assert sum(per_pos) == accepted and per_pos == sorted(per_pos, reverse=True)
    generated = metric(metrics, "vllm:generation_tokens_total")
    assert generated == 2 * whole.usage.completion_tokens


def test_completion_logprobs_streamed_match_whole(server) -> None:
    # Several tokens per chunk: each still gets its own logprobs entry and text offset.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    prompt = f"Text: {SOURCE}\nThe same text again: {SOURCE[:40]}"
    args = dict(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, logprobs=2)
    whole = client.completions.create(**args).choices[0]
    tokens, offsets, top, text = [], [], [], ""
    for chunk in client.completions.create(**args, stream=True):
        choice = chunk.choices[0]
        text += choice.text
        if choice.logprobs is not None:
            tokens += choice.logprobs.tokens
            offsets += choice.logprobs.text_offset
            top += choice.logprobs.top_logprobs
    assert text == whole.text
    assert tokens == whole.logprobs.tokens and len(tokens) == 40
    assert offsets == whole.logprobs.text_offset
    assert top == whole.logprobs.top_logprobs


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"method": "eagle", "num_speculative_tokens": 2}', "not supported"),
        ('{"method": "ngram"}', "num_speculative_tokens"),
        (
            '{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, '
            '"prompt_lookup_max": 2}',
            "prompt_lookup_min <= prompt_lookup_max",
        ),  # fmt: skip
        ("{not json", "not JSON"),
    ],
)
def test_a_bad_speculative_config_is_refused_at_startup(config: str, message: str) -> None:
    result = subprocess.run(
        [*_lumen(), "serve", "--speculative-config", config],
        env=_clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
