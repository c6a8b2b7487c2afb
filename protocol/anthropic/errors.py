"""Anthropic's error body, {"type": "error", "error": {"type", "message"}}, for every failure
of the Messages routes: a refusal before the answer as that body with its status, one after a
stream opened as an `error` event."""

from __future__ import annotations

import functools
import logging

from engine.errors import EngineDeadError, EngineOverloadedError
from protocol.admission import as_http_error, engine_errors_as_http
from protocol.anthropic.schemas import AnthropicError, AnthropicErrorDetail
from protocol.converter import dumps
from protocol.http import Handler, HTTPError, Request, Response, StreamingResponse
from protocol.nesting import nesting_errors_as_http

logger = logging.getLogger(__name__)

# Anthropic's error types by HTTP status; any other status is an api_error.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def _as_http(exc: BaseException) -> HTTPError:
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, EngineOverloadedError | EngineDeadError):
        return as_http_error(exc)
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return HTTPError(400, str(exc) or type(exc).__name__)
    return HTTPError(500, str(exc) or type(exc).__name__, "InternalServerError")


def anthropic_error(exc: BaseException) -> AnthropicError:
    http = _as_http(exc)
    detail = AnthropicErrorDetail(type=_TYPES.get(http.status, "api_error"), message=http.message)
    return AnthropicError(error=detail)


def anthropic_errors(handler: Handler) -> Handler:
    """`handler` with its refusals (engine and nesting ones too) in Anthropic's shape."""
    inner = engine_errors_as_http(nesting_errors_as_http(handler))

    @functools.wraps(handler)
    async def handle(request: Request) -> Response | StreamingResponse:
        try:
            return await inner(request)
        except HTTPError as exc:
            response = Response(status=exc.status, body=dumps(anthropic_error(exc)))
            response.headers.extend(exc.headers)
            return response

    return handle
