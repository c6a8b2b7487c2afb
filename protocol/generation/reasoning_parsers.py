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

REASONING_PARSERS = ("deepseek_r1", "qwen3")
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
                held = _partial_tag_length(self._buffer, END)
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


def split_reasoning(parser: ThinkingParser, text: str) -> tuple[str | None, str]:
    """A whole output's thinking (None when there is none) and its answer."""
    first, rest = parser.feed(text), parser.finish()
    reasoning = first.reasoning + rest.reasoning
    return reasoning or None, first.content + rest.content


def _partial_tag_length(text: str, tag: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
