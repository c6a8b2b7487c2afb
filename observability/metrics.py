"""Every Prometheus metric the server exports, on one explicit registry.

Engine metrics use vLLM v1's names, types, labels (`model_name`, `engine`) and buckets, so its
dashboards and alerts work unchanged; labels stay bounded (model name, route template, status
class, a few fixed reasons). docs/metrics.md lists every series and how it is measured.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
# The process's own figures (resident memory, CPU seconds, open files) under their usual
# process_* names, as any Python server exports them.
PROCESS = ProcessCollector(registry=REGISTRY)

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
ITERATION_TOKENS_BUCKETS = (
    1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
# fmt: on


def one_two_five_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to max_value: vLLM's buckets for token counts."""
    buckets: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_value:
                return tuple(buckets)
            buckets.append(mantissa * scale)
        scale *= 10


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

# --- Engine (observability/engine_stats.py records them) ---
# vLLM labels every engine metric with the served model and the engine's data-parallel index;
# each model here has one engine, index "0".
ENGINE_LABELS = ["model_name", "engine"]
FINISHED_REASONS = ("stop", "length", "abort")
# Where a prompt token's KV came from; vLLM's third source (a KV connector) never happens here.
PROMPT_TOKEN_SOURCES = ("local_compute", "local_cache_hit")


def _gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, [*ENGINE_LABELS, *extra], registry=REGISTRY)


def _counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
    return Counter(name, doc, [*ENGINE_LABELS, *extra], registry=REGISTRY)


def _histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, doc, ENGINE_LABELS, registry=REGISTRY, buckets=buckets)


# Scheduler state, set after every engine step (and after every abort).
NUM_REQUESTS_RUNNING = _gauge("vllm:num_requests_running", "Requests in the running batch.")
NUM_REQUESTS_WAITING = _gauge(
    "vllm:num_requests_waiting", "Requests waiting to be scheduled (new or preempted)."
)
NUM_REQUESTS_WAITING_BY_REASON = _gauge(
    "vllm:num_requests_waiting_by_reason",
    "Waiting requests by reason: capacity (no room in the batch or the KV cache) or deferred "
    "(waiting on something else; never, here).",
    ("reason",),
)
KV_CACHE_USAGE = _gauge(
    "vllm:kv_cache_usage_perc",
    "Fraction of KV-cache blocks held by requests (1 = full); cached blocks nobody holds are free.",
)
CACHE_CONFIG_INFO = Gauge(
    "vllm:cache_config_info",
    "The KV-cache configuration, as labels; the value is always 1.",
    [
        *ENGINE_LABELS,
        "block_size",
        "cache_dtype",
        "enable_prefix_caching",
        "prefix_caching_hash_algo",
        "num_gpu_blocks",
        "kv_cache_memory_bytes",
    ],
    registry=REGISTRY,
)

# Counters. prometheus_client appends _total: these are exposed as vllm:..._total.
NUM_PREEMPTIONS = _counter(
    "vllm:num_preemptions", "Preemptions: a running request lost its KV blocks (recompute)."
)
PREFIX_CACHE_QUERIES = _counter(
    "vllm:prefix_cache_queries", "Prefix-cache lookups, in prompt tokens looked up."
)
PREFIX_CACHE_HITS = _counter("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens found.")
PROMPT_TOKENS = _counter("vllm:prompt_tokens", "Prompt tokens of requests whose prefill completed.")
PROMPT_TOKENS_BY_SOURCE = _counter(
    "vllm:prompt_tokens_by_source",
    "Prompt tokens of requests whose prefill completed, by where their KV came from: "
    "local_compute (computed) or local_cache_hit (prefix cache).",
    ("source",),
)
PROMPT_TOKENS_CACHED = _counter(
    "vllm:prompt_tokens_cached", "Prompt tokens whose KV came from the prefix cache."
)
GENERATION_TOKENS = _counter("vllm:generation_tokens", "Generated tokens.")
SPEC_DECODE_DRAFTS = _counter(
    "vllm:spec_decode_num_drafts", "Speculative decoding: drafts checked (one per sequence-step)."
)
SPEC_DECODE_DRAFT_TOKENS = _counter(
    "vllm:spec_decode_num_draft_tokens", "Speculative decoding: draft tokens checked."
)
SPEC_DECODE_ACCEPTED_TOKENS = _counter(
    "vllm:spec_decode_num_accepted_tokens", "Speculative decoding: draft tokens accepted."
)
SPEC_DECODE_ACCEPTED_PER_POS = _counter(
    "vllm:spec_decode_num_accepted_tokens_per_pos",
    "Speculative decoding: draft tokens accepted, by their position in the draft (from 0).",
    ("position",),
)
REQUEST_SUCCESS = _counter(
    "vllm:request_success",
    "Finished requests (one per sample) by finished_reason: stop, length or abort.",
    ("finished_reason",),
)

ENGINE_STEP_FAILURES = _counter(
    "lumen:engine_step_failures",
    "Engine steps (or pooling passes) that raised; scope sequence: one sequence failed, step: "
    "every sequence in it. The engine went on serving after each.",
    ("scope",),
)

# Histograms.
ITERATION_TOKENS = _histogram(
    "vllm:iteration_tokens_total",
    "Tokens the model processed per engine step (prefill chunks and decodes).",
    ITERATION_TOKENS_BUCKETS,
)
TIME_TO_FIRST_TOKEN = _histogram(
    "vllm:time_to_first_token_seconds",
    "Time from a request's arrival to its first generated token, in seconds.",
    TTFT_BUCKETS,
)
INTER_TOKEN_LATENCY = _histogram(
    "vllm:inter_token_latency_seconds",
    "Time between two consecutive generated tokens of a request, in seconds.",
    ITL_BUCKETS,
)
REQUEST_TIME_PER_OUTPUT_TOKEN = _histogram(
    "vllm:request_time_per_output_token_seconds",
    "Per request with at least two tokens: decode time / (generated tokens - 1), in seconds.",
    ITL_BUCKETS,
)
E2E_REQUEST_LATENCY = _histogram(
    "vllm:e2e_request_latency_seconds",
    "Time from a request's arrival until it finished, in seconds.",
    REQUEST_LATENCY_BUCKETS,
)
REQUEST_QUEUE_TIME = _histogram(
    "vllm:request_queue_time_seconds",
    "Time from a request's arrival until it was first scheduled, in seconds.",
    REQUEST_LATENCY_BUCKETS,
)
REQUEST_INFERENCE_TIME = _histogram(
    "vllm:request_inference_time_seconds",
    "Time from a request's first scheduling until it finished, in seconds.",
    REQUEST_LATENCY_BUCKETS,
)
REQUEST_PREFILL_TIME = _histogram(
    "vllm:request_prefill_time_seconds",
    "Time from a request's first scheduling to its first token, in seconds.",
    REQUEST_LATENCY_BUCKETS,
)
REQUEST_DECODE_TIME = _histogram(
    "vllm:request_decode_time_seconds",
    "Time from a request's first token until it finished, in seconds.",
    REQUEST_LATENCY_BUCKETS,
)
REQUEST_PARAMS_N = _histogram(
    "vllm:request_params_n",
    "The n parameter (samples per prompt) of finished requests.",
    PARAMS_N_BUCKETS,
)


class TokenCountHistograms:
    """The histograms of token counts, whose buckets vLLM sizes 1-2-5 up to max_model_len.

    One family serves every model, so its buckets are sized for the longest context of any
    served model: each generation engine announces its max_model_len when it is built, and a
    longer one rebuilds the families. Every model loads before the first request is served, so
    a rebuild never drops an observation.
    """

    SPECS = {
        "request_prompt_tokens": (
            "vllm:request_prompt_tokens",
            "Prompt tokens per finished request.",
        ),
        "request_generation_tokens": (
            "vllm:request_generation_tokens",
            "Generated tokens per finished request.",
        ),
        "request_max_num_generation_tokens": (
            "vllm:request_max_num_generation_tokens",
            "Per finished request: the most tokens any of its n samples generated.",
        ),
        "request_params_max_tokens": (
            "vllm:request_params_max_tokens",
            "The max_tokens parameter of finished requests.",
        ),
        "request_prefill_kv_computed_tokens": (
            "vllm:request_prefill_kv_computed_tokens",
            "Per finished request: prompt tokens whose KV was computed (not from the prefix "
            "cache).",
        ),
    }

    def __init__(self) -> None:
        self.max_model_len = 0
        self.families: dict[str, Histogram] = {}
        self._label_sets: list[tuple[str, ...]] = []

    def add_engine(self, labels: tuple[str, ...], max_model_len: int) -> None:
        if labels not in self._label_sets:
            self._label_sets.append(labels)
        if max_model_len > self.max_model_len:
            self.max_model_len = max_model_len
            for family in self.families.values():
                REGISTRY.unregister(family)
            buckets = one_two_five_buckets(max_model_len)
            self.families = {
                key: _histogram(name, doc, buckets) for key, (name, doc) in self.SPECS.items()
            }
        # Every engine's series exist from the start, as in vLLM: rate() needs a zero to begin.
        for family in self.families.values():
            for known in self._label_sets:
                family.labels(*known)

    def observe(self, key: str, labels: tuple[str, ...], value: float) -> None:
        self.families[key].labels(*labels).observe(value)


TOKEN_COUNTS = TokenCountHistograms()
