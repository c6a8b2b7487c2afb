"""What the lifespan hands to every request through the ASGI `state` dict (key "server")."""

from __future__ import annotations

from typing import Any

import attrs

from configs.settings import Settings
from protocol.responses.store import ResponseStore
from protocol.served_model import ServedModel


@attrs.define
class ServerState:
    settings: Settings
    # served model name -> its model, filled once loading finishes
    models: dict[str, ServedModel] = attrs.field(factory=dict)
    status: str = "loading"  # "loading" | "ready" | "failed"
    error: str | None = None
    # Set once shutdown begins: new requests get 503 while in-flight ones finish.
    draining: bool = False
    in_flight: int = 0  # requests being served, operational routes aside (GET /load)
    # The /health?deep=true check now running, which concurrent callers share.
    deep_probe: Any = None
    # The Responses API's stored responses (max_stored_responses of them).
    responses: ResponseStore = attrs.field(
        default=attrs.Factory(
            lambda self: ResponseStore(self.settings.max_stored_responses), takes_self=True
        )
    )
