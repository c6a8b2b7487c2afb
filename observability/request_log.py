"""What the one log line per HTTP request says (asgi/access_log.py writes it).

The route and status are the middleware's to see; the token counts and the time to the first
token are only known where the handlers call the engines. The middleware puts a RequestRecord
in a context variable and those calls add to it (protocol/generation/engine_calls.py,
protocol/pooling/inputs.py `pooled_vectors`). A context variable rather than a parameter: the
handler, its response stream and the engine call all run in the task that serves the request,
so the record reaches the two places that know the numbers without every handler passing it along.
Outside a request (tests, the warm-up) there is no record and nothing is noted.
"""

from __future__ import annotations

import contextvars
import logging
import time
from urllib.parse import quote

import attrs

logger = logging.getLogger("lumen.requests")

# Longer paths are cut in the log: a client controls them.
_MAX_PATH_CHARS = 256


@attrs.define(eq=False)
class RequestRecord:
    started: float = attrs.field(factory=time.monotonic)
    prompt_tokens: int | None = None  # None: the request ran no model (e.g. /v1/models)
    generation_tokens: int | None = None  # None: it generated nothing (e.g. embeddings)
    first_token_time: float | None = None  # time.monotonic() of the first generated token

    def note_prompt_tokens(self, count: int) -> None:
        self.prompt_tokens = (self.prompt_tokens or 0) + count

    def note_generation_tokens(self, count: int) -> None:
        if self.first_token_time is None and count:
            self.first_token_time = time.monotonic()
        self.generation_tokens = (self.generation_tokens or 0) + count


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "lumen_request_record", default=None
)


def current_record() -> RequestRecord | None:
    """The record of the HTTP request being served, if request logging is on."""
    return _current.get()


def begin(record: RequestRecord) -> contextvars.Token[RequestRecord | None]:
    return _current.set(record)


def end(token: contextvars.Token[RequestRecord | None]) -> None:
    _current.reset(token)


def safe_path(path: str) -> str:
    # Percent-encoded like on the wire, so that no path can forge a line or a field.
    quoted = quote(path, safe="/:@!$&'()*+,;=-._~%")
    return quoted if len(quoted) <= _MAX_PATH_CHARS else quoted[:_MAX_PATH_CHARS] + "..."


def log_request(
    *,
    request_id: str | None,
    method: str,
    path: str,
    status: int | None,
    complete: bool,
    record: RequestRecord,
) -> None:
    now = time.monotonic()
    ttft = record.first_token_time
    logger.info(
        "request_id=%s method=%s path=%s status=%s prompt_tokens=%s generation_tokens=%s "
        "ttft=%s total=%.3fs%s",
        request_id or "-",
        method if method.isalpha() and len(method) <= 16 else "other",
        safe_path(path),
        "-" if status is None else status,
        "-" if record.prompt_tokens is None else record.prompt_tokens,
        "-" if record.generation_tokens is None else record.generation_tokens,
        "-" if ttft is None else f"{ttft - record.started:.3f}s",
        now - record.started,
        # The response started but its body never ended: the client left, or it failed mid-way.
        "" if complete or status is None else " incomplete",
    )
