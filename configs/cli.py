"""`lumen serve MODEL [options]`: the server's command line, shaped like `vllm serve`.

Every setting of configs/settings.py is an option named after it (`--max-num-seqs`; booleans
also as `--no-...`), generated from the attrs fields so new settings appear by themselves. Beside
them: vLLM's names that are not settings here (--host, --port, --disable-log-requests,
--enable-request-id-headers) and --config FILE, a YAML (or TOML) file whose keys are the long
option names, with hyphens or underscores. Priority: command line > environment (LUMEN_<NAME>)
> config file (--config, else LUMEN_CONFIG) > defaults.

The server runs in this process on hypercorn (with --num-replicas N > 1 or --autoscale, as a Ray
Serve application instead: asgi/replicas/). SIGTERM or SIGINT drains it: new requests get 503,
requests in flight get shutdown_timeout_s to finish, whatever is left is then cancelled (which
aborts its engine sequences), and the process exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import cattrs
import cattrs.v
import orjson

from configs.settings import (
    EMBEDDED_MODEL,
    ENV_PREFIX,
    JSON_LIST_SETTINGS,
    Settings,
    load_settings,
    read_config_file,
)

logger = logging.getLogger("lumen")

# --disable-X flags, each the same as --no-Y of the boolean setting Y: alias -> (Y, what it does).
DISABLE_ALIASES = {
    "disable_log_requests": ("log_requests", "no log line per request"),
    "disable_playground": ("playground", "no browser playground at /"),
}
# Options that are not settings here: vLLM's server options and the aliases above.
# --enable-request-id-headers is accepted and changes nothing: every response carries
# X-Request-Id.
SERVER_OPTIONS = ("host", "port", "enable_request_id_headers", *DISABLE_ALIASES)
DEFAULT_HOST, DEFAULT_PORT = "0.0.0.0", 8000  # vLLM's: every interface

_HELP = {
    "speculative_config": 'speculative decoding, a JSON object: {"method": "ngram", '
    '"num_speculative_tokens": K, "prompt_lookup_min": A, "prompt_lookup_max": B}',
    "model": "the model, as MODEL is (MODEL wins)",
    "served_model_name": "the name clients send as `model`; when MODEL is given (other than "
    "the embedded one) and no name is set anywhere, MODEL itself",
    "dtype": "auto: bf16 where the hardware has it, else float32",
    "kv_cache_dtype": "the KV cache's element type: auto (the model's dtype; bfloat16 when dtype "
    "is auto too) or bfloat16 (half the memory and bytes read of a float32 model's cache; keys "
    "and values rounded to bf16)",
    "max_model_len": "context length, prompt plus output (None: the model's)",
    "chat_template": "a file path or an inline Jinja template (None: the model's)",
    "chat_template_content_format": "how message content reaches the template",
    "max_num_seqs": "most sequences in the running batch",
    "max_num_batched_tokens": "most tokens per engine step (longer prompts prefill in chunks)",
    "long_prefill_token_threshold": "most tokens one sequence computes per step (0: no limit "
    "but max_num_batched_tokens)",
    "max_logprobs": "most logprobs a request may ask for per token",
    "max_sequences_per_request": "most sequences (prompts x n) one request may start; "
    "default: max_num_seqs",
    "matmul": "GEMM of the float linear layers: kernel (fixed-order C), library (oneDNN in "
    "64-row tiles) or auto (library for bf16 on AVX-512 BF16 / AMX CPUs)",
    "api_key": "Bearer key every route except /health, /ping, /version, /metrics needs "
    "(also read from VLLM_API_KEY)",
    "models": "more models served beside MODEL, as a JSON array of objects "
    '({"name", "model", "task", ...}); "[]" for none',
    "generation_config": 'sampling defaults: "auto" (the model\'s generation_config.json), '
    '"vllm" (none), or a folder holding a generation_config.json',
    "shutdown_timeout_s": "on SIGTERM/SIGINT, seconds requests in flight get to finish",
    "log_requests": "one log line per request",
    "playground": "the browser playground at / (chat, ranking, live server figures)",
    "allowed_origins": 'CORS: origins a browser may call from, a JSON list ("*": any)',
    "allowed_methods": "CORS: methods a browser may use, a JSON list",
    "allowed_headers": "CORS: request headers a browser may send, a JSON list",
    "allow_credentials": "CORS: let browsers send credentials (cookies, Authorization)",
}


@attrs.frozen
class _Default:
    """An option's default. Help prints it; parsing leaves it where an option was not given,
    which tells given options (they beat the environment) from defaults (they lose to it)."""

    value: Any

    def __str__(self) -> str:
        if isinstance(self.value, tuple):  # JSON lists, as the option takes them
            items = [
                attrs.asdict(m, filter=lambda a, v: v != a.default) if attrs.has(type(m)) else m
                for m in self.value
            ]
            return orjson.dumps(items).decode()
        return str(self.value)


def _json_array(raw: str) -> list[Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("expected a JSON array")
    return value


def _add_setting_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Settings)
    for field in attrs.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        default = field.default
        if isinstance(default, attrs.Factory):
            default = default.factory()
        options: dict[str, Any] = {
            "dest": field.name,
            "default": _Default(default),
            "help": _HELP.get(field.name, f"the {field.name} setting (see README.md)"),
        }
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
            continue
        if field.name in JSON_LIST_SETTINGS:
            options.update(type=_json_array, metavar="JSON")
        else:
            # int | None -> int: the type a given value must have.
            scalar = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
            options["type"] = scalar if scalar in (int, float) else str
            choices = getattr(field.validator, "options", None)  # attrs.validators.in_
            if choices is not None:
                options["choices"] = choices
        parser.add_argument(flag, **options)


def build_parser() -> argparse.ArgumentParser:
    serve = argparse.ArgumentParser(add_help=False)  # the options; `lumen serve` takes them
    serve.add_argument(
        "model_tag",
        nargs="?",
        metavar="MODEL",
        default=_Default(EMBEDDED_MODEL),
        help="a local HF folder (config.json, safetensors, tokenizer) or embedded:smollm2",
    )
    serve.add_argument(
        "--config",
        default=_Default(None),
        metavar="FILE",
        help="YAML file of options (keys: the long option names, e.g. max-model-len: 2048); "
        "TOML works too. Options given here beat it, and so does the environment",
    )
    serve.add_argument("--host", default=_Default(DEFAULT_HOST), help="address to listen on")
    serve.add_argument("--port", type=int, default=_Default(DEFAULT_PORT), help="port")
    for alias, (setting, effect) in DISABLE_ALIASES.items():
        serve.add_argument(
            "--" + alias.replace("_", "-"),
            action="store_true",
            default=_Default(False),
            help=f"{effect} (same as --no-{setting.replace('_', '-')})",
        )
    serve.add_argument(
        "--enable-request-id-headers",
        action="store_true",
        default=_Default(False),
        help="accepted for vLLM compatibility: X-Request-Id is always sent",
    )
    _add_setting_options(serve)

    top = argparse.ArgumentParser(
        prog="lumen",
        description="lumen: an OpenAI-compatible LLM inference server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="serve")
    serve_command = commands.add_parser(
        "serve",
        parents=[serve],
        help="serve a model",
        description="Serve MODEL with vLLM's OpenAI-compatible HTTP API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    top.epilog = serve_command.format_help()  # `lumen --help` lists every option too
    return top


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Option values -> (settings, server options), with vLLM's aliases of settings applied."""
    settings = {k: v for k, v in options.items() if k not in SERVER_OPTIONS}
    server = {k: v for k, v in options.items() if k in SERVER_OPTIONS}
    for alias, (setting, _) in DISABLE_ALIASES.items():
        if server.pop(alias, False):
            settings.setdefault(setting, False)
    return settings, server


def _file_options(path: str) -> dict[str, Any]:
    values = read_config_file(path)
    known = {f.name for f in attrs.fields(Settings)} | set(SERVER_OPTIONS)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown options in {path}: {unknown}")
    if isinstance(values.get("models"), str):  # the JSON array --models takes
        values["models"] = orjson.loads(values["models"])
    return values


def _message(exc: BaseException, type_: Any) -> str:
    # A validator's ValueError names the setting and the rule; keep it over cattrs' summary.
    return str(exc) if type(exc) is ValueError else cattrs.v.format_exception(exc, type_)


def resolve(
    argv: Sequence[str] | None = None, env: dict[str, str] | None = None
) -> tuple[Settings, str, int]:
    """The settings, host and port that `lumen <argv>` serves with."""
    env = dict(os.environ) if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if not isinstance(v, _Default)}
    given.pop("command")
    model_tag = given.pop("model_tag", None)
    if model_tag is not None:
        given["model"] = model_tag
    path = given.pop("config", None) or env.get(ENV_PREFIX + "CONFIG")
    try:
        cli, cli_server = _split(given)
        from_file, file_server = _split(_file_options(path) if path else {})
        # As vLLM: a model given without a name is served under its own name (the embedded
        # one keeps its Hugging Face name).
        model = cli.get("model", from_file.get("model"))
        named = ("served_model_name" in cli or "served_model_name" in from_file) or (
            ENV_PREFIX + "SERVED_MODEL_NAME" in env
        )
        if model not in (None, EMBEDDED_MODEL) and not named:
            cli["served_model_name"] = model
        settings = load_settings(env, cli, from_file)
        server = {"host": DEFAULT_HOST, "port": DEFAULT_PORT, **file_server, **cli_server}
        host, port = str(server["host"]), int(server["port"])
    except cattrs.BaseValidationError as exc:
        parser.error(
            "invalid settings: " + "; ".join(cattrs.transform_error(exc, format_exception=_message))
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    return settings, host, port


class _Cancellable:
    """The app with every HTTP request in a cancel scope, so that when the shutdown timeout is
    up the requests still running end here like a client disconnect: their engine sequences are
    aborted and their connections closed. Left to hypercorn, whole connection tasks would be
    cancelled instead, which asyncio (Python 3.11) reports with a traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = app.server
        self._scopes: set[anyio.CancelScope] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with anyio.CancelScope() as cancel:
            self._scopes.add(cancel)
            try:
                await self.app(scope, receive, send)
            finally:
                self._scopes.discard(cancel)

    def cancel_all(self) -> None:
        for cancel in self._scopes:
            cancel.cancel()


async def _serve(app: _Cancellable, config: Any, timeout_s: float) -> None:
    from hypercorn.asyncio import serve

    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)

    async def drain() -> None:
        # Returning tells hypercorn to stop: it closes the listening sockets, waits for open
        # connections (graceful_timeout), then runs the lifespan shutdown, which stops the
        # engines.
        await signalled.wait()
        app.server.draining = True  # requests on open connections get 503 from now on
        logger.info(
            "shutting down: waiting up to %g s for %d requests", timeout_s, app.server.in_flight
        )
        loop.call_later(timeout_s, app.cancel_all)

    await serve(app, config, shutdown_trigger=drain)


def warn_if_open(host: str, settings: Settings) -> None:
    """vLLM users expect 0.0.0.0 by default, so it stays; but without a key that serves
    anyone who can reach the machine, which deserves more than silence."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if not loopback and not settings.api_key:
        logger.warning(
            "listening on %s WITHOUT AN API KEY: anyone who can reach this machine can use "
            "every model. Set --api-key (or VLLM_API_KEY), or --host 127.0.0.1 to serve only "
            "this machine.",
            host,
        )


def serve(settings: Settings, host: str, port: int) -> None:
    if settings.replica_range is not None and importlib.util.find_spec("ray") is None:
        raise SystemExit(
            "lumen: --num-replicas / --autoscale run on Ray Serve, which is not installed "
            "here: pip install -e '.[ray]' (or pip install 'ray[serve]')"
        )
    from hypercorn.config import Config

    from asgi.app import build_app, configure_logging

    configure_logging(settings.log_level)
    warn_if_open(host, settings)
    if settings.replica_range is not None:
        from asgi.replicas.launch import serve_on_ray  # imports Ray, only when asked for

        serve_on_ray(settings, host, port)
        return
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # A margin only: requests are ended at shutdown_timeout_s by _Cancellable.
    config.graceful_timeout = settings.shutdown_timeout_s + 5
    config.accesslog = None  # the request log line (log_requests) says more
    # hypercorn's own lines through our handler and format, once (a logger it leaves as is).
    config.errorlog = logging.getLogger("hypercorn")
    asyncio.run(_serve(_Cancellable(build_app(settings)), config, settings.shutdown_timeout_s))
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    settings, host, port = resolve(argv)
    serve(settings, host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
