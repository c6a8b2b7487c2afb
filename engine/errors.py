"""Why an engine refuses a request; the protocol layer maps each to its HTTP status."""

from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The engine loop failed: its requests fail and new ones are refused (503)."""

    @classmethod
    def of(cls, model: str, cause: BaseException) -> EngineDeadError:
        return cls(f"engine for {model} died: {cause!r}")


class EngineStepError(RuntimeError):
    """A step failed while running this request (500); the engine went on serving."""

    @classmethod
    def caused_by(cls, cause: BaseException) -> EngineStepError:
        return cls(f"The engine failed while running this request: {cause}")


class SequenceError(RuntimeError):
    """Raised inside a step for a failure that belongs to one sequence (its logits rules,
    its grammar): that sequence's request fails, the others in the step are retried."""

    def __init__(self, seq_id: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.seq_id = seq_id


class EngineOverloadedError(RuntimeError):
    """The model already has as much work in flight as it admits (429; engine/admission.py).
    Refusing beats queueing without bound, where every client waits longer and memory grows
    until something breaks."""


class EngineSleepingError(EngineDeadError):
    """The model was put to sleep (POST /sleep): refused with the 503 a dead engine's requests
    get, until POST /wake_up."""
