"""Why an engine refuses a request; the protocol layer maps each to its HTTP status."""

from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The engine loop failed: its requests fail and new ones are refused (503)."""


class EngineOverloadedError(RuntimeError):
    """The model already has as many requests in flight as it admits (429): the running batch
    plus a bounded queue. Refusing beats queueing without bound, where every client waits
    longer and memory grows until something breaks."""


def overloaded(model: str, capacity: int) -> EngineOverloadedError:
    return EngineOverloadedError(
        f"The model `{model}` is at capacity ({capacity} requests running or queued); retry later."
    )
