"""Engine refusals as HTTP: a model at capacity is a 429 with Retry-After, a dead engine a 503.

Engines count their own work in flight (sequences and prompt tokens, engine/admission.py) and
refuse past their capacity, which is exact and cannot leak. A stream only reaches the engine
once its response has started, so the stream handlers also check before answering
(`check_capacity`): the client then gets a real 429 rather than an error event inside a 200.
Only a burst racing that check lands in the engine's own refusal, which a stream reports
in-band with the same code.
"""

from __future__ import annotations

import functools
from typing import Any

from engine.errors import EngineDeadError, EngineOverloadedError
from engine.sampling_params import SamplingParams
from protocol.http import Handler, HTTPError
from protocol.served_model import ServedModel

# Seconds a refused client should wait: a running batch turns over in about that time.
RETRY_AFTER_S = 1


def as_http_error(exc: EngineOverloadedError | EngineDeadError) -> HTTPError:
    if isinstance(exc, EngineOverloadedError):
        retry_after = [(b"retry-after", str(RETRY_AFTER_S).encode())]
        return HTTPError(429, str(exc), "RateLimitError", headers=retry_after)
    return HTTPError(503, str(exc), "ServiceUnavailableError")


def check_capacity(served: ServedModel, prompts: list[tuple[list[int], SamplingParams]]) -> None:
    try:
        served.engine.admission.check(len(prompts), sum(len(ids) for ids, _ in prompts))
    except EngineOverloadedError as exc:
        raise as_http_error(exc) from None


def engine_errors_as_http(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def handle(request: Any) -> Any:
        try:
            return await handler(request)
        except (EngineOverloadedError, EngineDeadError) as exc:
            raise as_http_error(exc) from None

    return handle
