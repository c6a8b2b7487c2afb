"""Schema pieces shared by the completion and chat APIs: sampling fields, usage, stream options.

Field names are the JSON names. Requests are frozen attrs classes built by the one converter in
protocol/converter.py; unknown JSON keys are ignored there, so only fields we act on live here.
"""

from __future__ import annotations

import attrs

# A field whose metadata carries this key is left out of the JSON when it is None. vLLM dumps
# stream chunks with `exclude_unset`, so e.g. `usage` only appears on chunks that set it.
# Use as `attrs.field(default=None, metadata=OMITTED_IF_NONE)`.
OMIT_IF_NONE = "omit_if_none"
OMITTED_IF_NONE = {OMIT_IF_NONE: True}


# OpenAI accepts four prompt shapes; the converter's hook picks the right one (see converter.py).
Prompt = str | list[str] | list[int] | list[list[int]]
Stop = str | list[str]


@attrs.frozen
class StreamOptions:
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """The sampling fields that completions and chat share (vLLM's names and defaults)."""

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: Stop | None = None
    stop_token_ids: list[int] | None = None
    n: int | None = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def num_choices(self) -> int:
        return 1 if self.n is None else self.n


@attrs.frozen
class UsageInfo:
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None
