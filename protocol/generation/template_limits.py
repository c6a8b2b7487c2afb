"""Rendering a chat template that came with a request, under limits.

Jinja's sandbox stops a template from reaching Python's internals, not from burning the CPU or
the memory: two nested loops of `range(100000)` are 10^10 iterations, and `'x' * 10**10` (or a
string that doubles in a loop) asks for gigabytes. So a request's own template renders with
`*`, `**` and `+` checked before they run (no constant folding at compile time either), its
output counted as it is produced, and a trace function that stops it past a deadline or once
the process grew by too much memory. Each limit raises `TemplateLimitError`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Checks made by the trace function: every this many Python lines of the template's code.
_CHECK_EVERY = 64
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class TemplateLimitError(jinja2.exceptions.SecurityError):
    pass


# The size limit of the render running on this thread (render_limited sets it).
_limits = threading.local()


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox whose arithmetic cannot build values larger than the render's `max_chars`."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sized = (str, list, tuple)
        if operator == "*":
            for items, times in ((left, right), (right, left)):
                if isinstance(items, sized) and isinstance(times, int):
                    self._check_size(len(items) * times)
        elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            self._check_size(len(left) + len(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * max(abs(left), 2).bit_length() > 64 * 1024:
                raise TemplateLimitError("the template computes a number too large to hold")
        return super().call_binop(context, operator, left, right)

    def _check_size(self, size: int) -> None:
        max_chars = getattr(_limits, "max_chars", 0)
        if size > max_chars:
            raise TemplateLimitError(
                f"the template builds a value of {size} items (at most {max_chars})"
            )


def render_limited(
    template: jinja2.Template,
    context: dict[str, Any],
    *,
    timeout_s: float,
    max_chars: int,
    max_memory_bytes: int,
) -> str:
    """The rendered text; TemplateLimitError past a limit (a RecursionError or MemoryError
    raised while rendering propagates as it is)."""
    check = _limit_checker(timeout_s, max_memory_bytes)
    previous = sys.gettrace()
    _limits.max_chars = max_chars
    sys.settrace(check)
    try:
        pieces, size = [], 0
        for piece in template.generate(context):
            size += len(piece)
            if size > max_chars:
                raise TemplateLimitError(f"the template renders more than {max_chars} characters")
            pieces.append(piece)
        return "".join(pieces)
    finally:
        sys.settrace(previous)


def _limit_checker(timeout_s: float, max_memory_bytes: int) -> Callable[..., Any]:
    deadline = time.monotonic() + timeout_s
    memory_limit = _resident_bytes() + max_memory_bytes
    count = 0

    def check(frame: Any, event: str, arg: Any) -> Callable[..., Any]:
        nonlocal count
        count += 1
        if count % _CHECK_EVERY == 0:
            if time.monotonic() > deadline:
                raise TemplateLimitError(f"the template took longer than {timeout_s} s to render")
            if _resident_bytes() > memory_limit:
                raise TemplateLimitError("the template used too much memory to render")
        return check

    return check


def _resident_bytes() -> int:
    """The process's resident memory (Linux); 0 where /proc is not there, which disables the
    memory check."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return 0
