"""Incremental detokenization with stop strings, one instance per sequence.

Text is released as soon as it is final: not while the last bytes form an incomplete UTF-8
character, and not while the tail could still grow into a stop string. So a client never
sees a stop string, nor half of one that the next token completes. Each step costs time linear
in its new text (plus each stop string's length for the search window), however long the stop
strings and the output are: the held-back tail is tracked by one small automaton per string.
"""

from __future__ import annotations

from typing import Any

# Tokens of the prompt decoded along with new ones: enough context for tokenizers whose
# pieces decode differently at the start of a string (leading-space markers).
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        *,
        stop: tuple[str, ...] = (),
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self._tails = [_StopPrefix(s) for s in stop]
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output
        self.token_ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.token_ids)
        self.text = ""  # all decoded output text (possibly cut at a stop string)
        self.num_released = 0  # how much of self.text the client has been given

    def push(self, token_ids: list[int]) -> tuple[str, str | None]:
        """Add new tokens; returns (text now safe to release, the stop string that matched)."""
        old_len = len(self.text)
        for token_id in token_ids:
            self.token_ids.append(token_id)
            self.text += self._decode_new()
        new_text = self.text[old_len:]
        for tail in self._tails:
            tail.feed(new_text)
        matched = self._find_stop(old_len)
        if matched is not None:
            return self._release(len(self.text)), matched
        return self._release(len(self.text) - self._stop_prefix_len()), None

    def flush(self) -> str:
        """At the end of a sequence: whatever was held back for a possible stop string."""
        return self._release(len(self.text))

    def _decode_new(self) -> str:
        ids, skip = self.token_ids, self.skip_special_tokens
        options = {"skip_special_tokens": skip}
        if not self.spaces_between_special_tokens:
            # Only slow tokenizers take this option; fast ones never add those spaces.
            options["spaces_between_special_tokens"] = False
        decode = self.tokenizer.decode
        prefix = decode(ids[self.prefix_offset : self.read_offset], **options)
        full = decode(ids[self.prefix_offset :], **options)
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return ""  # an incomplete character (or nothing visible): wait for more tokens
        self.prefix_offset, self.read_offset = self.read_offset, len(ids)
        return full[len(prefix) :]

    def _find_stop(self, old_len: int) -> str | None:
        """Cut self.text at the earliest stop string that ends in the new text."""
        best: tuple[int, str] | None = None
        for s in self.stop:
            start = max(0, old_len - len(s) + 1)
            i = self.text.find(s, start)
            if i != -1 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            return None
        end = best[0] + len(best[1]) if self.include_stop_str_in_output else best[0]
        self.text = self.text[:end]
        return best[1]

    def _stop_prefix_len(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        return max((tail.matched for tail in self._tails), default=0)

    def _release(self, end: int) -> str:
        end = max(end, self.num_released)
        out = self.text[self.num_released : end]
        self.num_released = end
        return out


class _StopPrefix:
    """How much of one stop string the text ends with (Knuth-Morris-Pratt): each new character
    costs amortized O(1), where comparing every prefix with the tail would cost O(len(stop)^2)
    per token."""

    def __init__(self, stop: str) -> None:
        self.stop = stop
        # fallback[i]: the longest proper prefix of stop[: i + 1] that is also its suffix.
        self.fallback = [0] * len(stop)
        k = 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = self.fallback[k - 1]
            if stop[i] == stop[k]:
                k += 1
            self.fallback[i] = k
        self.matched = 0  # the longest proper prefix of stop that the text ends with

    def feed(self, text: str) -> None:
        stop, fallback, k = self.stop, self.fallback, self.matched
        for char in text:
            while k and stop[k] != char:
                k = fallback[k - 1]
            if stop[k] == char:
                k += 1
            if k == len(stop):  # a whole match (the caller cuts there): keep the proper part
                k = fallback[k - 1]
        self.matched = k
