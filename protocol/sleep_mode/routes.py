"""Sleep mode's routes (only answered with enable_sleep_mode)."""

from __future__ import annotations

from protocol.route import Route
from protocol.sleep_mode.handlers import LEVELS, is_sleeping, sleep, wake_up

ROUTES = [
    Route(
        "POST",
        "/sleep",
        sleep,
        "Free the KV cache (level 2: the weights too) until /wake_up",
        "server",
        None,
        "SleepState",
        query={"level": {"type": "integer", "enum": list(LEVELS)}},
    ),
    Route("POST", "/wake_up", wake_up, "Reload what /sleep freed", "server", None, "SleepState"),
    Route(
        "GET", "/is_sleeping", is_sleeping, "Whether the models sleep", "server", None, "SleepState"
    ),
]
