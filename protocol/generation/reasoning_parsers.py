"""Model output → the model's thinking and its answer, for models that think before they answer
(`reasoning_parser`: "deepseek_r1", "qwen3"), as vLLM splits them into `reasoning` and
`content`.

Both families think between `<think>` and `</think>`. Their chat templates open the block in the
prompt (so the output usually holds only the closing tag); a `<think>` the model writes itself
at the start is dropped. Output that never closes the block is all thinking (it was cut
short). Thinking is off, and the whole output is the answer, when the rendered prompt already
closes the block (a template's `enable_thinking: false` writes an empty `<think></think>`),
and with qwen3 when the request's chat_template_kwargs say `enable_thinking: false`.

One parser object follows one choice: `feed(text)` returns what can be sent now, holding back
a suffix that may be the start of a tag; `finish()` returns the rest. A whole response feeds
everything at once, so streaming and non-streaming see the same split.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.generation.tool_parsers import partial_tag_length

START, END = "<think>", "</think>"


@attrs.define
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""


def thinking_on(parser_name: str, prompt_text: str, template_kwargs: dict[str, Any]) -> bool:
    """Whether the output starts inside the thinking block."""
    if prompt_text.rfind(END) > prompt_text.rfind(START):
        return False  # the prompt has closed the block already
    return not (parser_name == "qwen3" and template_kwargs.get("enable_thinking") is False)


def thinking_end_token(tokenizer: Any) -> int | None:
    """The id of `</think>` where it is one token of the vocabulary (as in Qwen3's and
    DeepSeek-R1's), else None."""
    ids = tokenizer.encode(END, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


class ThinkingParser:
    def __init__(self, thinking: bool) -> None:
        self._thinking = thinking  # inside the block
        self._at_start = thinking  # a leading <think> may still come
        self._buffer = ""

    def feed(self, text: str) -> ReasoningDelta:
        self._buffer += text
        out = ReasoningDelta()
        if self._at_start:
            if START.startswith(self._buffer):
                return out  # all of it may be the opening tag: wait
            self._at_start = False
            self._buffer = self._buffer.removeprefix(START)
        if self._thinking:
            end = self._buffer.find(END)
            if end < 0:
                held = partial_tag_length(self._buffer, END)
                out.reasoning = self._buffer[: len(self._buffer) - held]
                self._buffer = self._buffer[len(self._buffer) - held :]
                return out
            out.reasoning = self._buffer[:end]
            self._buffer = self._buffer[end + len(END) :]
            self._thinking = False
        out.content, self._buffer = self._buffer, ""
        return out

    def finish(self) -> ReasoningDelta:
        held, self._buffer = self._buffer, ""
        return ReasoningDelta(reasoning=held) if self._thinking else ReasoningDelta(content=held)

    @property
    def thinking(self) -> bool:
        """Whether the output is still inside the thinking block."""
        return self._thinking


@attrs.frozen
class Reasoning:
    """How a request's replies are split: `thinking` as thinking_on says (None: not split), and
    whether the thinking is shown (the request's include_reasoning)."""

    thinking: bool | None
    shown: bool = True

    def parser(self) -> ThinkingParser | None:
        return None if self.thinking is None else ThinkingParser(self.thinking)


NOT_SPLIT = Reasoning(None)


def split_piece(parser: ThinkingParser, text: str, last: bool) -> tuple[str, str]:
    """One streamed piece's thinking and answer; the last piece flushes what was held back."""
    piece = parser.feed(text) if text else ReasoningDelta()
    if last:
        rest = parser.finish()
        return piece.reasoning + rest.reasoning, piece.content + rest.content
    return piece.reasoning, piece.content


def split_reasoning(parser: ThinkingParser, text: str) -> tuple[str | None, str]:
    """A whole output's thinking (None when there is none) and its answer."""
    first, rest = parser.feed(text), parser.finish()
    reasoning = first.reasoning + rest.reasoning
    return reasoning or None, first.content + rest.content


def reasoning_token_count(token_ids: list[int], thinking: bool | None, tokenizer: Any) -> int:
    """How many of a reply's tokens went to thinking (usage's reasoning_tokens): those up to and
    including the one that closes the block; all of them when it never closed."""
    if not thinking:
        return 0
    end = thinking_end_token(tokenizer)
    if end is not None:
        return token_ids.index(end) + 1 if end in token_ids else len(token_ids)
    # `</think>` spans several tokens: the shortest prefix whose text holds it (a prefix's
    # text only grows, so a binary search finds it).
    low, high = 0, len(token_ids)
    while low < high:
        middle = (low + high) // 2
        if END in tokenizer.decode(token_ids[: middle + 1]):
            high = middle
        else:
            low = middle + 1
    return min(low + 1, len(token_ids))
