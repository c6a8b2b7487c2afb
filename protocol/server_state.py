"""What the lifespan hands to every request through the ASGI `state` dict (key "server")."""

from __future__ import annotations

from typing import Any

import attrs

from configs.settings import Settings


@attrs.define
class ServerState:
    settings: Settings
    # served model name -> engine.async_engine.AsyncEngine, filled once loading finishes
    engines: dict[str, Any] = attrs.field(factory=dict)
    status: str = "loading"  # "loading" | "ready" | "failed"
    error: str | None = None
    # Set once shutdown begins: new requests get 503 while in-flight ones finish.
    draining: bool = False
    in_flight: int = 0  # requests being served, operational routes aside (GET /load)
