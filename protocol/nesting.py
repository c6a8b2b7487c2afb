"""Inputs nested deeper than the parsers, encoders and templates can follow (a JSON schema 400
levels deep, tool-call arguments 3,000 levels deep) are the client's mistake: a 400 in
OpenAI's shape, never a 500."""

from __future__ import annotations

import functools

from protocol.http import Handler, HTTPError, Request, Response, StreamingResponse

TOO_DEEP = "The request is nested too deeply to process; flatten its JSON."


def nesting_errors_as_http(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def handle(request: Request) -> Response | StreamingResponse:
        try:
            return await handler(request)
        except RecursionError:
            raise HTTPError(400, TOO_DEEP, "BadRequestError") from None
        except TypeError as exc:  # orjson's encoder stops at 255 levels with this message
            if "recursion limit" not in str(exc).lower():
                raise
            raise HTTPError(400, TOO_DEEP, "BadRequestError") from None

    return handle
