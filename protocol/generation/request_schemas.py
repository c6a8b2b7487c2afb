"""Schema pieces shared by the completion and chat APIs: sampling fields, usage, stream options.

Field names are the JSON names. Requests are frozen attrs classes built by the one converter in
protocol/converter.py; unknown JSON keys are ignored there, so only fields we act on live here.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import INT64_MAX, INT64_MIN, TOKEN_ID, bounded, documented

# A field whose metadata carries this key is left out of the JSON when it is None. vLLM dumps
# stream chunks with `exclude_unset`, so e.g. `usage` only appears on chunks that set it.
# Use as `attrs.field(default=None, metadata=OMITTED_IF_NONE)`.
OMIT_IF_NONE = "omit_if_none"
OMITTED_IF_NONE = {OMIT_IF_NONE: True}


# OpenAI accepts four prompt shapes; the converter's hook picks the right one (see converter.py).
Prompt = str | list[str] | list[int] | list[list[int]]
Stop = str | list[str]


@attrs.frozen(kw_only=True)
class StructuredOutputs:
    """vLLM's `structured_outputs`: exactly one constraint on the generated text."""

    json: dict[str, Any] | str | None = None  # a JSON schema (object or its JSON text)
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None  # Lark (llguidance's dialect) or GBNF
    json_object: bool | None = None


@attrs.frozen(kw_only=True)
class JsonSchemaFormat:
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class ResponseFormat:
    """OpenAI's `response_format`: text, json_object or json_schema."""

    type: str = documented(attrs.NOTHING, enum=["text", "json_object", "json_schema"])
    json_schema: JsonSchemaFormat | None = None


@attrs.frozen
class StreamOptions:
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """The sampling fields that completions and chat share (vLLM's names and defaults)."""

    model: str | None = None
    temperature: float | None = bounded(
        minimum=0, message="{name} must be non-negative, got {value}."
    )
    top_p: float | None = bounded(
        exclusive_minimum=0, maximum=1, message="{name} must be in (0, 1], got {value}."
    )
    top_k: int | None = bounded(
        minimum=-1, message="{name} must be 0 (disable), or at least 1, got {value}."
    )
    min_p: float | None = bounded(
        minimum=0, maximum=1, message="{name} must be in [0, 1], got {value}."
    )
    seed: int | None = bounded(
        minimum=INT64_MIN,
        maximum=INT64_MAX,
        message=f"{{name}} must be in [{INT64_MIN}, {INT64_MAX}], got {{value}}.",
    )
    stop: Stop | None = None
    stop_token_ids: list[int] | None = documented(items=TOKEN_ID)
    n: int | None = bounded(1, minimum=1, maximum=16384)  # vLLM's VLLM_MAX_N_SEQUENCES
    presence_penalty: float | None = bounded(
        minimum=-2, maximum=2, message="{name} must be in [-2, 2], got {value}."
    )
    frequency_penalty: float | None = bounded(
        minimum=-2, maximum=2, message="{name} must be in [-2, 2], got {value}."
    )
    repetition_penalty: float | None = bounded(
        exclusive_minimum=0, message="{name} must be greater than zero, got {value}."
    )
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extra sampling fields
    min_tokens: int = bounded(0, minimum=0, message="{name} must be non-negative, got {value}.")
    # token id (as a string) -> bias
    logit_bias: dict[str, float] | None = documented(propertyNames={"pattern": "^[0-9]+$"})
    allowed_token_ids: list[int] | None = documented(minItems=1, items=TOKEN_ID)
    bad_words: list[str] | None = None
    include_stop_str_in_output: bool = False
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: int | None = documented(minimum=-1)  # -1 or positive (truncate_prompt)
    return_token_ids: bool | None = None
    priority: int = 0  # accepted; scheduling is first come, first served
    request_id: str | None = None  # the response id's base, unless X-Request-Id is sent
    prompt_logprobs: int | None = documented(minimum=0)  # at most max_logprobs (check_logprobs)
    # Structured outputs: vLLM's field, its older top-level spellings, and OpenAI's
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    response_format: ResponseFormat | None = None

    @property
    def num_choices(self) -> int:
        return 1 if self.n is None else self.n


@attrs.frozen
class UsageInfo:
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None
