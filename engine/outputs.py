"""What the engine publishes for a request after each step: deltas, never the whole text."""

from __future__ import annotations

import attrs


@attrs.frozen
class RequestOutput:
    request_id: str
    new_token_ids: list[int]  # tokens generated since the previous output
    new_text: str  # text released since the previous output (stop strings never split)
    num_prompt_tokens: int
    num_output_tokens: int  # total so far
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that matched
    num_cached_tokens: int = 0
