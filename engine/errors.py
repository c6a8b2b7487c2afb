"""Why an engine refuses a request; the protocol layer maps each to its HTTP status."""

from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The engine loop failed: its requests fail and new ones are refused (503)."""


class EngineOverloadedError(RuntimeError):
    """The model already has as much work in flight as it admits (429; engine/admission.py).
    Refusing beats queueing without bound, where every client waits longer and memory grows
    until something breaks."""
