"""What the engine publishes for a request after each step: deltas, never the whole text."""

from __future__ import annotations

import attrs


@attrs.frozen
class TokenLogprobs:
    """One position's log-probabilities: the chosen token's, and the most likely ones."""

    token_id: int
    logprob: float  # may be -inf (a token the sampling filters had removed)
    rank: int  # 1 = the most likely token
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first
    named: tuple[tuple[int, float], ...] = ()  # (token id, logprob) of logprob_token_ids


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
    # One entry per new token when the request asked for logprobs.
    logprobs: list[TokenLogprobs] | None = None
    # With the first output only, when asked for: one entry per prompt token (None for the
    # first, which nothing predicts).
    prompt_logprobs: list[TokenLogprobs | None] | None = None
