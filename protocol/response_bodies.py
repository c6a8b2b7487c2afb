"""The one place for formatting shared by the handlers: ids, timestamps, usage, JSON and SSE."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from engine.errors import EngineDeadError, EngineOverloadedError
from protocol.admission import as_http_error
from protocol.converter import dumps
from protocol.generation.request_schemas import UsageInfo
from protocol.http import HTTPError, Request, Response, error_body

logger = logging.getLogger(__name__)

SSE_DONE = b"data: [DONE]\n\n"
# Characters that str.splitlines (httpx's aiter_lines, many hand-written SSE readers) and old
# JavaScript take for line breaks, although SSE ends lines only at CR and LF. orjson writes them
# raw inside strings; as JSON escapes they mean the same and no reader splits an event on them.
_LINE_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def random_uuid() -> str:
    # vLLM's ids: 16 hex digits from the low 64 bits of a uuid4.
    return f"{uuid.uuid4().int & ((1 << 64) - 1):016x}"


def response_id(prefix: str, request: Request, body_request_id: str | None = None) -> str:
    """`<prefix><base>`, the base being (vLLM's order) the client's X-Request-Id header, else
    the body's `request_id`, else the id the server gave the request."""
    sent_header = request.headers.get("x-request-id") == request.request_id
    base = body_request_id if body_request_id and not sent_header else request.request_id
    return prefix + base


def completion_id(request: Request, body_request_id: str | None = None) -> str:
    return response_id("cmpl-", request, body_request_id)


def chat_completion_id(request: Request, body_request_id: str | None = None) -> str:
    return response_id("chatcmpl-", request, body_request_id)


def created_now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> UsageInfo:
    """`cached_tokens`: prompt tokens whose KV came from the prefix cache (OpenAI's field)."""
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details={"cached_tokens": cached_tokens},
    )


def json_body(obj: Any, status: int = 200) -> Response:
    """A response whose body is an attrs schema object (or plain JSON data) as JSON."""
    return Response(status=status, body=dumps(obj))


def sse_json(obj: Any) -> bytes:
    """obj as JSON for an SSE data line: one line for every line reader."""
    return one_line(dumps(obj))


def one_line(data: bytes) -> bytes:
    """JSON bytes with the Unicode line breaks inside its strings escaped."""
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def sse_event(obj: Any) -> bytes:
    return b"data: " + sse_json(obj) + b"\n\n"


def sse_error_event(exc: BaseException) -> bytes:
    """The in-band error vLLM sends once HTTP 200 is out: data: {"error": {...}}."""
    if isinstance(exc, EngineOverloadedError | EngineDeadError):
        exc = as_http_error(exc)
    if isinstance(exc, HTTPError):
        body = error_body(exc.status, exc.message, exc.err_type, exc.param)
    elif isinstance(exc, ValueError | TypeError | OverflowError):
        # vLLM maps these to 400 BadRequestError in and out of streams alike.
        body = error_body(400, str(exc) or type(exc).__name__, "BadRequestError")
    else:
        body = error_body(500, str(exc) or type(exc).__name__, "InternalServerError")
    return b"data: " + one_line(body) + b"\n\n"
