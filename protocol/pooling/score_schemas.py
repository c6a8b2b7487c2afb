"""POST /score (+ /v1/score) and /rerank (+ /v1, /v2): requests and responses in vLLM's shape.

Score takes one pair of sides, under any of vLLM's names: `text_1`/`text_2`, `queries`/
`documents`, `queries`/`items` or `data_1`/`data_2`. Each side is a string or a list of strings.
"""

from __future__ import annotations

import attrs

from protocol.bounds import documented
from protocol.generation.request_schemas import OMITTED_IF_NONE, UsageInfo

Texts = str | list[str]


@attrs.frozen(kw_only=True)
class ScoreRequest:
    model: str | None = None
    text_1: Texts | None = None
    text_2: Texts | None = None
    queries: Texts | None = None
    documents: Texts | None = None
    items: Texts | None = None
    data_1: Texts | None = None
    data_2: Texts | None = None
    truncate_prompt_tokens: int | None = documented(minimum=-1)
    user: str | None = None
    request_id: str | None = None  # the response id's base, unless X-Request-Id is sent


@attrs.frozen(kw_only=True)
class ScoreData:
    index: int
    object: str = "score"
    score: float


@attrs.frozen(kw_only=True)
class ScoreResponse:
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: UsageInfo


@attrs.frozen(kw_only=True)
class RerankRequest:
    model: str | None = None
    query: str = documented(attrs.NOTHING, minLength=1)
    documents: list[str] = documented(
        attrs.NOTHING, minItems=1, items={"type": "string", "minLength": 1}
    )
    top_n: int = documented(0, minimum=0)  # 0: every document
    return_documents: bool = True
    truncate_prompt_tokens: int | None = documented(minimum=-1)
    request_id: str | None = None  # the response id's base, unless X-Request-Id is sent


@attrs.frozen(kw_only=True)
class RerankDocument:
    text: str


@attrs.frozen(kw_only=True)
class RerankResult:
    index: int
    document: RerankDocument | None = attrs.field(default=None, metadata=OMITTED_IF_NONE)
    relevance_score: float


@attrs.frozen(kw_only=True)
class RerankUsage:
    prompt_tokens: int
    total_tokens: int


@attrs.frozen(kw_only=True)
class RerankResponse:
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]
