"""A gauge of the tasks alive on the server's event loop: after load, it must come back down
to where it was, or something (a stream, a watcher, an engine request) leaked."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from observability.metrics import REGISTRY


def _count_tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped from outside the event loop (tests)
        return 0


EVENT_LOOP_TASKS = Gauge(
    "lumen_event_loop_tasks",
    "Tasks alive on the server's event loop; growth that never comes back down is a leak.",
    registry=REGISTRY,
)
EVENT_LOOP_TASKS.set_function(_count_tasks)
