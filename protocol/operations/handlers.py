"""Operational routes: /health (and /ping), /load, /version, /metrics.

Unlike vLLM, which does not answer at all while loading, /health answers 503 with the state
("loading", "failed", "draining") so that probes can tell them apart (llama.cpp does the
same). `/health?deep=true` goes further: every model must serve a real request (one generated
token, one embedding) before it reports ready, which catches an engine that is alive but
stuck.
"""

from __future__ import annotations

import functools
import time
import uuid
from importlib import metadata
from typing import Any

import anyio
import attrs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.errors import EngineOverloadedError, EngineSleepingError
from engine.sampling_params import SamplingParams
from observability import event_loop  # noqa: F401 - registers its gauge with REGISTRY
from observability.metrics import REGISTRY
from protocol.generation.engine_calls import generate_all
from protocol.http import HTTPError, Request, Response, json_response
from protocol.model_resolution import server_state
from protocol.served_model import ServedModel

FALLBACK_VERSION = "0.1.0"
DEEP_CHECK_TIMEOUT_S = 30.0


async def health(request: Request) -> Response:
    """Readiness. What failed is told only to a client with the key (when the server has one):
    error text can name paths and internals. The deep check runs a real request on each
    model, so it needs the key too."""
    server = server_state(request)
    if server.status == "failed":
        if not request.authorized:
            return json_response({"status": "failed"}, 503)
        return json_response({"status": "failed", "error": server.error}, 503)
    if server.status != "ready":
        return json_response({"status": server.status}, 503)
    if server.draining:
        return json_response({"status": "draining"}, 503)
    problems = engine_problems(server)
    if problems:
        body: dict[str, Any] = {"status": "unhealthy"}
        if request.authorized:
            body["errors"] = problems
        return json_response(body, 503)
    if b"deep=true" in request.query_string.split(b"&"):
        if not request.authorized:
            raise HTTPError(
                401,
                "/health?deep=true runs the models: it needs the API key.",
                "AuthenticationError",
            )
        return await _shared_deep_health(server)
    return json_response({})


def engine_problems(server: Any) -> dict[str, str]:
    """Models whose engine died, or whose step has run past the watchdog (step_watchdog_s)."""
    problems = {}
    watchdog_s = server.settings.step_watchdog_s
    now = time.monotonic()
    for name, served in server.models.items():
        engine = served.engine
        if engine.error is not None:
            problems[name] = f"the engine died: {engine.error!r}"
        elif engine.step_started is not None and now - engine.step_started > watchdog_s:
            problems[name] = (
                f"a step has run for {now - engine.step_started:.0f} s "
                f"(step_watchdog_s = {watchdog_s:g})"
            )
    return problems


@attrs.define
class _DeepProbe:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    response: Response | None = None


async def _shared_deep_health(server: Any) -> Response:
    """One deep check at a time, whatever the number of callers: those who come while it runs
    get its answer, so probes cannot pile work onto the models."""
    probe = server.deep_probe
    if probe is not None:
        await probe.done.wait()
    else:
        probe = server.deep_probe = _DeepProbe()
        try:
            # Finished even if this caller leaves: the others are waiting for it.
            with anyio.CancelScope(shield=True):
                probe.response = await _deep_health(server)
        finally:
            server.deep_probe = None
            probe.done.set()
    if probe.response is None:
        return json_response({"status": "unhealthy", "errors": {"check": "it failed"}}, 503)
    return probe.response


async def _deep_health(server: Any) -> Response:
    failures = {}
    with anyio.move_on_after(DEEP_CHECK_TIMEOUT_S) as deadline:
        for name, served in server.models.items():
            try:
                await _serve_one(served)
            except EngineOverloadedError:
                pass  # busy serving others: alive, and at capacity is not a failure
            except EngineSleepingError:
                pass  # put to sleep on purpose (POST /sleep): nothing to restart
            except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a probe
                failures[name] = f"{type(exc).__name__}: {exc}"
    if deadline.cancelled_caught:
        failures["timeout"] = f"the check took longer than {DEEP_CHECK_TIMEOUT_S} s"
    if failures:
        return json_response({"status": "unhealthy", "errors": failures}, 503)
    return json_response({"status": "ready", "models": list(server.models)})


async def _serve_one(served: ServedModel) -> None:
    prompt = served.tokenizer.encode("ping") or [0]
    if served.task == "generate":
        params = SamplingParams(max_tokens=1, temperature=0.0)
        await generate_all(served, f"health-{uuid.uuid4().hex}", [(prompt, params)])
    else:
        await served.engine.encode([prompt])


async def load(request: Request) -> Response:
    """vLLM's /load: requests in flight, for load balancers that route to the least busy."""
    return json_response({"server_load": server_state(request).in_flight})


@functools.cache
def lumen_version() -> str:
    try:
        return metadata.version("lumen")
    except metadata.PackageNotFoundError:  # running from a source checkout
        return FALLBACK_VERSION


async def version(request: Request) -> Response:
    return json_response({"version": lumen_version()})


async def metrics(request: Request) -> Response:
    return Response(status=200, body=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
