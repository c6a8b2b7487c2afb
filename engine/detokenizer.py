"""Incremental detokenization with stop strings, one instance per sequence.

Text is released as soon as it is final: not while the last bytes form an incomplete UTF-8
character, and not while the tail could still grow into a stop string. So a client never
sees a stop string, nor half of one that the next token completes.
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
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, end: int) -> str:
        end = max(end, self.num_released)
        out = self.text[self.num_released : end]
        self.num_released = end
        return out
