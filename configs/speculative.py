"""The `--speculative-config` setting: which drafter proposes tokens and how many per step.

Taken as vLLM takes it, a JSON object: `{"method": "ngram", "num_speculative_tokens": 4,
"prompt_lookup_min": 2, "prompt_lookup_max": 5}`. Only the `ngram` method (prompt lookup) is
served: it needs no second model. As in vLLM, an unset lookup bound takes the other's value,
and both default to 5. `disable_by_batch_size` (vLLM's too): no drafts while more requests
than that are in the engine (running or waiting), where verifying them costs more than it saves.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

METHODS = ("ngram",)
_DEFAULT_LOOKUP = 5


@attrs.frozen
class SpeculativeConfig:
    method: str
    num_speculative_tokens: int
    prompt_lookup_min: int
    prompt_lookup_max: int
    disable_by_batch_size: int | None = None


def parse_speculative_config(raw: str | dict[str, Any]) -> SpeculativeConfig:
    """A JSON object (or the dict a config file gives) -> the config; ValueError saying what is
    wrong otherwise."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"speculative_config is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("speculative_config must be a JSON object")
    values = dict(raw)
    method = values.pop("method", None)
    if method is None and values.get("model") == "[ngram]":  # vLLM's older spelling
        method = values.pop("model")[1:-1]
    if method not in METHODS:
        raise ValueError(
            f"speculative_config method {method!r} is not supported; supported: {list(METHODS)}"
        )
    k = values.pop("num_speculative_tokens", None)
    low = values.pop("prompt_lookup_min", None)
    high = values.pop("prompt_lookup_max", None)
    batch = values.pop("disable_by_batch_size", None)
    if values:
        raise ValueError(f"speculative_config has unknown keys: {sorted(values)}")
    for name, value in (("num_speculative_tokens", k), ("prompt_lookup_min", low),
                        ("prompt_lookup_max", high), ("disable_by_batch_size", batch)):  # fmt: skip
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"speculative_config {name} must be an integer, got {value!r}")
    if k is None or k < 1:
        raise ValueError("speculative_config needs num_speculative_tokens >= 1")
    if low is None and high is None:
        low = high = _DEFAULT_LOOKUP
    low = high if low is None else low
    high = low if high is None else high
    if not 1 <= low <= high:
        raise ValueError(
            f"speculative_config needs 1 <= prompt_lookup_min <= prompt_lookup_max, "
            f"got {low} and {high}"
        )
    if batch is not None and batch < 2:
        raise ValueError(f"speculative_config disable_by_batch_size must be >= 2, got {batch}")
    return SpeculativeConfig(method, k, low, high, batch)
