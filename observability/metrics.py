"""Every Prometheus metric the server exports, on one explicit registry.

Engine metrics use vLLM's names, types and buckets so existing dashboards work; labels stay
bounded (model name, route template, status class).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# vLLM's histogram buckets, so its dashboards' quantiles mean the same here.
# fmt: off
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)
# fmt: on

# --- HTTP (asgi/metrics.py) ---
HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests by route, method and status class",
    ["handler", "method", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration until the response body ends",
    ["handler", "method"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being served",
    ["handler", "method"],
    registry=REGISTRY,
)

# --- Engine (engine/async_engine.py) ---
_MODEL = ["model_name"]
NUM_REQUESTS_RUNNING = Gauge(
    "vllm:num_requests_running",
    "Number of requests in the running batch.",
    _MODEL,
    registry=REGISTRY,
)
NUM_REQUESTS_WAITING = Gauge(
    "vllm:num_requests_waiting",
    "Number of requests waiting to be scheduled.",
    _MODEL,
    registry=REGISTRY,
)
KV_CACHE_USAGE = Gauge(
    "vllm:kv_cache_usage_perc",
    "KV-cache usage. 1 means 100 percent usage.",
    _MODEL,
    registry=REGISTRY,
)
NUM_PREEMPTIONS = Counter(
    "vllm:num_preemptions", "Cumulative number of preemptions.", _MODEL, registry=REGISTRY
)
PREFIX_CACHE_QUERIES = Counter(
    "vllm:prefix_cache_queries",
    "Prefix cache queries, in terms of number of queried tokens.",
    _MODEL,
    registry=REGISTRY,
)
PREFIX_CACHE_HITS = Counter(
    "vllm:prefix_cache_hits",
    "Prefix cache hits, in terms of number of cached tokens.",
    _MODEL,
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(
    "vllm:prompt_tokens", "Number of prefill tokens processed.", _MODEL, registry=REGISTRY
)
GENERATION_TOKENS = Counter(
    "vllm:generation_tokens",
    "Number of generation tokens processed.",
    _MODEL,
    registry=REGISTRY,
)
REQUEST_SUCCESS = Counter(
    "vllm:request_success",
    "Count of successfully processed requests.",
    _MODEL + ["finished_reason"],
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "vllm:time_to_first_token_seconds",
    "Histogram of time to first token in seconds.",
    _MODEL,
    registry=REGISTRY,
    buckets=TTFT_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "vllm:inter_token_latency_seconds",
    "Histogram of inter-token latency in seconds.",
    _MODEL,
    registry=REGISTRY,
    buckets=ITL_BUCKETS,
)
E2E_REQUEST_LATENCY = Histogram(
    "vllm:e2e_request_latency_seconds",
    "Histogram of e2e request latency in seconds.",
    _MODEL,
    registry=REGISTRY,
    buckets=REQUEST_LATENCY_BUCKETS,
)
