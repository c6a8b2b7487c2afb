"""GET /v1/models: one card per served model name, in vLLM's shape."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class ModelPermission:
    id: str
    object: str = "model_permission"
    created: int
    allow_create_engine: bool = False
    allow_sampling: bool = True
    allow_logprobs: bool = True
    allow_search_indices: bool = False
    allow_view: bool = True
    allow_fine_tuning: bool = False
    organization: str = "*"
    group: str | None = None
    is_blocking: bool = False


@attrs.frozen(kw_only=True)
class ModelCard:
    id: str
    object: str = "model"
    created: int
    owned_by: str = "lumen"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[ModelPermission] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class ModelList:
    object: str = "list"
    data: list[ModelCard]
