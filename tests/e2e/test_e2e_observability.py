"""Observability of a real server: /metrics passes promtool, the Grafana dashboard only asks
for series the server exports, and the log has one line per request and one per model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import EMBEDDING_MODEL_NAME, REPO

pytestmark = pytest.mark.e2e

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
# Two findings come with vLLM's names, which are its contract with dashboards and alerts: every
# name has a colon (promtool reserves those for recording rules), and the histogram
# vllm:iteration_tokens_total ends in _total. Anything else promtool says is a failure.
EXPECTED_PROBLEMS = re.compile(
    r"^vllm:\S+ metric names should not contain ':'$"
    r'|^vllm:iteration_tokens_total non-counter metrics should not have "_total" suffix$'
)


@pytest.fixture(scope="module")
def traffic(server):
    """A few requests of each kind (ids prefixed obs-), so that every series has samples."""
    with httpx.Client(base_url=server.url, timeout=120) as http:
        return _send_traffic(http)


def _send_traffic(http: httpx.Client) -> dict[str, httpx.Response]:
    replies = {}
    replies["obs-completion"] = http.post(
        "/v1/completions",
        json={"prompt": "The capital of France is", "max_tokens": 5, "temperature": 0},
        headers={"X-Request-Id": "obs-completion"},
    )
    replies["obs-chat-stream"] = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Hi!"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"X-Request-Id": "obs-chat-stream"},
    )
    replies["obs-n2"] = http.post(
        "/v1/completions",
        json={"prompt": "Once upon a time", "max_tokens": 3, "n": 2, "seed": 1},
        headers={"X-Request-Id": "obs-n2"},
    )
    replies["obs-embed"] = http.post(
        "/v1/embeddings",
        json={"model": EMBEDDING_MODEL_NAME, "input": ["Hello world", "Bonjour"]},
        headers={"X-Request-Id": "obs-embed"},
    )
    replies["obs-missing"] = http.get("/v1/nothing-here", headers={"X-Request-Id": "obs-missing"})
    for request_id, reply in replies.items():
        assert reply.status_code == (404 if request_id == "obs-missing" else 200), reply.text
    return replies


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is not None:
        return path
    if shutil.which("apt-get") is not None:
        pytest.fail(
            "promtool is not installed, but could be: `./install.sh test` installs it "
            "(apt-get install --no-install-recommends prometheus)"
        )
    pytest.skip("promtool not found, and no apt-get to install it with (Debian's prometheus)")


def test_metrics_pass_promtool(http, traffic):
    promtool = _promtool()
    text = http.get("/metrics").text
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    problems = (lint.stdout + lint.stderr).splitlines()
    unexpected = [line for line in problems if line.strip() and not EXPECTED_PROBLEMS.match(line)]
    assert not unexpected, "\n".join(unexpected)
    assert lint.returncode == 0 or problems  # exit status 3: only the expected lint findings


def _exported(text: str) -> set[str]:
    return {
        re.match(r"[^{ ]+", line).group(0)
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_cover_vllms_v1_set(http, traffic):
    exported = _exported(http.get("/metrics").text)
    counters = [
        "num_preemptions", "prefix_cache_queries", "prefix_cache_hits", "prompt_tokens",
        "prompt_tokens_by_source", "prompt_tokens_cached", "generation_tokens", "request_success",
    ]  # fmt: skip
    histograms = [
        "iteration_tokens_total", "time_to_first_token_seconds", "inter_token_latency_seconds",
        "request_time_per_output_token_seconds", "e2e_request_latency_seconds",
        "request_queue_time_seconds", "request_inference_time_seconds",
        "request_prefill_time_seconds", "request_decode_time_seconds", "request_prompt_tokens",
        "request_generation_tokens", "request_max_num_generation_tokens", "request_params_n",
        "request_params_max_tokens", "request_prefill_kv_computed_tokens",
    ]  # fmt: skip
    gauges = [
        "num_requests_running", "num_requests_waiting", "num_requests_waiting_by_reason",
        "kv_cache_usage_perc", "cache_config_info",
    ]  # fmt: skip
    expected = {f"vllm:{name}_total" for name in counters}
    parts = ("bucket", "sum", "count")
    expected |= {f"vllm:{name}_{part}" for name in histograms for part in parts}
    expected |= {f"vllm:{name}" for name in gauges}
    expected |= {"http_requests_total", "http_request_duration_seconds_bucket"}
    assert expected <= exported, sorted(expected - exported)


# Everything in a query that is not a metric name: PromQL's words and Grafana's variables.
def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if match.group(0) in {"and", "or", "unless", "bool", "offset"}:
            continue
        if match.start() and expr[match.start() - 1] in "$.0123456789":
            continue  # a Grafana variable, or part of a number
        names.add(match.group(0))
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return [re.sub(r"label_values\(([^,)]+).*\)", r"\1", e) for e in exprs]


def test_the_dashboard_names_only_exported_metrics(http, traffic):
    exprs = _dashboard_exprs()
    referenced = set().union(*(_metric_names(e) for e in exprs))
    assert all(_metric_names(e) for e in exprs)  # each query reads some metric
    assert {
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "http_requests_total",
    } <= referenced
    missing = referenced - _exported(http.get("/metrics").text)
    assert not missing, f"the dashboard asks for series the server does not export: {missing}"


def _log_line(server, request_id: str) -> dict[str, str]:
    deadline = time.monotonic() + 10  # written once the handler returns, maybe after the reply
    while True:
        for line in server.log().splitlines():
            if f"request_id={request_id} " in line:
                return dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert time.monotonic() < deadline, f"no log line for {request_id}"
        time.sleep(0.1)


def test_each_request_logs_one_line_with_its_usage(server, traffic):
    usage = traffic["obs-completion"].json()["usage"]
    line = _log_line(server, "obs-completion")
    assert line["method"] == "POST" and line["path"] == "/v1/completions"
    assert line["status"] == "200"
    assert int(line["prompt_tokens"]) == usage["prompt_tokens"]
    assert int(line["generation_tokens"]) == usage["completion_tokens"] == 5
    assert float(line["ttft"].removesuffix("s")) <= float(line["total"].removesuffix("s"))

    events = [
        json.loads(chunk.removeprefix("data: "))
        for chunk in traffic["obs-chat-stream"].text.split("\n\n")
        if chunk.startswith("data: {")
    ]
    stream_usage = events[-1]["usage"]
    line = _log_line(server, "obs-chat-stream")
    assert line["path"] == "/v1/chat/completions" and line["status"] == "200"
    assert int(line["prompt_tokens"]) == stream_usage["prompt_tokens"]
    assert int(line["generation_tokens"]) == stream_usage["completion_tokens"]

    n2 = traffic["obs-n2"].json()["usage"]
    line = _log_line(server, "obs-n2")
    assert int(line["prompt_tokens"]) == n2["prompt_tokens"]  # the prompt once, not per sample
    assert int(line["generation_tokens"]) == n2["completion_tokens"]

    line = _log_line(server, "obs-embed")
    assert int(line["prompt_tokens"]) == traffic["obs-embed"].json()["usage"]["prompt_tokens"]
    assert line["generation_tokens"] == line["ttft"] == "-"

    line = _log_line(server, "obs-missing")
    assert line["status"] == "404" and line["method"] == "GET"
    assert sum("request_id=obs-missing " in row for row in server.log().splitlines()) == 1


def test_startup_logs_each_model(server):
    log = server.log()
    generate = re.search(r"SmolLM2-135M-Instruct ready in [\d.]+ s: (.*)", log)
    assert generate, log[-3000:]
    assert re.fullmatch(
        r"task generate, dtype float32, quantization none, max_model_len \d+, "
        r"KV cache (\d+) blocks x 16 = (\d+) tokens \([\d.]+ GiB float32\), prefix caching on, "
        r"warm-up [\d.]+ s.*",
        generate.group(1),
    ), generate.group(1)
    embed = re.search(r"all-MiniLM-L6-v2 ready in [\d.]+ s: (.*)", log)
    assert embed and embed.group(1).startswith("task embed, dtype float32, max_model_len ")
    assert re.search(r"all-MiniLM-L6-v2: warm-up took [\d.]+ s", log)


def test_the_dashboard_is_valid_grafana_json():
    dashboard = json.loads(Path(DASHBOARD).read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        for target in panel.get("targets", ()):
            assert target["expr"].count("(") == target["expr"].count(")")
