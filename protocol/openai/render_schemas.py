"""The render routes' response: vLLM's token-in GenerateRequest."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class GenerateRequest:
    """What a chat or completion request submits for one prompt: its token ids and sampling
    parameters (vLLM's names), ready to be sent to a token-in server."""

    request_id: str
    token_ids: list[int]
    sampling_params: dict[str, Any]
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    priority: int = 0
