"""The server a benchmark talks to: the one at --url, or one it starts for the run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def server_url(url: str | None, log_path: Path) -> Iterator[str]:
    """`url` itself, or the URL of a hypercorn serving the embedded model alone (no embedding
    model beside it), logging to log_path and stopped afterwards."""
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(REPO))
    from tests.e2e.server import Server

    server = Server({"LUMEN_MODELS": "[]"}, log_path)
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()
