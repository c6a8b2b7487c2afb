"""Draft tokens by prompt lookup (speculative decoding's `ngram` method, as vLLM names it).

A sequence's text often repeats itself (code edits, summaries quoting their source, JSON keys):
when the last n tokens appeared earlier in the prompt or output, the tokens that followed them
there are a cheap guess at what comes next. The target model then checks the guesses in one
forward pass and keeps the longest agreeing run, so the output is what it would have been.

The rule (vLLM's): the longest n in [min_n, max_n] whose last-n-token pattern occurs earlier,
its earliest occurrence, and up to k tokens that follow it (fewer near the end of the tokens or
of max_model_len). Vectorised with numpy: a step proposes for every sequence of a batch.
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@attrs.frozen
class NgramProposer:
    k: int  # num_speculative_tokens
    min_n: int = 1  # prompt_lookup_min
    max_n: int = 4  # prompt_lookup_max
    max_model_len: int | None = None

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.min_n <= self.max_n:
            raise ValueError("prompt_lookup_min must be >= 1 and <= prompt_lookup_max")
        if self.k < 1:
            raise ValueError("num_speculative_tokens must be >= 1")

    def propose(self, token_ids: list[int] | np.ndarray) -> list[int]:
        """The draft for a sequence whose tokens (prompt, then output) are `token_ids`."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        total = len(tokens)
        room = self.k if self.max_model_len is None else min(self.k, self.max_model_len - total)
        if room <= 0:
            return []
        for n in range(min(self.max_n, total - 1), self.min_n - 1, -1):
            # Windows that start early enough to leave a token after them: [0, total - n - 1].
            windows = sliding_window_view(tokens[: total - 1], n)
            hits = np.flatnonzero((windows == tokens[total - n :]).all(axis=1))
            if len(hits):
                start = int(hits[0]) + n
                return tokens[start : start + room].tolist()
        return []
