"""Sleep mode (with enable_sleep_mode, as vLLM's --enable-sleep-mode): POST /sleep?level=1|2
frees every generation model's KV cache (level 2: its weights too, reloaded from disk on
wake), POST /wake_up brings them back, GET /is_sleeping tells. While asleep, requests to those
models get a 503; pooling models hold no KV cache and keep serving."""

from __future__ import annotations

import urllib.parse
from typing import Any

from protocol.http import HTTPError, Request, Response, json_response
from protocol.model_resolution import server_state

LEVELS = (1, 2)


def _sleepers(request: Request) -> list[Any]:
    """The engines that can sleep (the generation ones); a 404 when sleep mode is off, as for
    any route the server does not offer."""
    server = server_state(request)
    if not server.settings.enable_sleep_mode:
        raise HTTPError(404, "Not Found", "NotFoundError")
    return [m.engine for m in server.models.values() if hasattr(m.engine, "sleep")]


def _level(request: Request) -> int:
    query = urllib.parse.parse_qs(request.query_string.decode("latin-1"))
    raw = (query.get("level") or ["1"])[0]
    if raw not in {str(level) for level in LEVELS}:
        raise HTTPError(400, f"level must be 1 or 2, got {raw!r}.", "BadRequestError", "level")
    return int(raw)


async def sleep(request: Request) -> Response:
    engines = _sleepers(request)
    level = _level(request)
    for engine in engines:  # each waits for its requests in flight to finish
        await engine.sleep(level)
    return json_response({"is_sleeping": True, "level": level})


async def wake_up(request: Request) -> Response:
    for engine in _sleepers(request):
        await engine.wake_up()
    return json_response({"is_sleeping": False, "level": 0})


async def is_sleeping(request: Request) -> Response:
    level = max((engine.sleep_level for engine in _sleepers(request)), default=0)
    return json_response({"is_sleeping": level > 0, "level": level})
