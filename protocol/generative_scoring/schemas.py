"""POST /generative_scoring: request and response in vLLM's shapes."""

from __future__ import annotations

import attrs

from protocol.bounds import TOKEN_ID, documented
from protocol.generation.request_schemas import Prompt, UsageInfo
from protocol.pooling.score_schemas import ScoreData


@attrs.frozen(kw_only=True)
class GenerativeScoringRequest:
    """How likely each label token is to come next after query + item, for every item."""

    query: Prompt  # a string or token ids
    items: Prompt  # strings, or lists of token ids
    label_token_ids: list[int] = documented(attrs.NOTHING, minItems=1, items=TOKEN_ID)
    model: str | None = None
    # True: the labels' probabilities renormalised among themselves; False: the model's own.
    apply_softmax: bool = True
    item_first: bool = False  # the prompt is item + query instead of query + item
    add_special_tokens: bool = True  # for the query; items never get them
    priority: int = 0
    request_id: str | None = None  # the response id's base, unless X-Request-Id is sent


@attrs.frozen(kw_only=True)
class GenerativeScoringResponse:
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]  # one per item, in order: the first label's probability
    usage: UsageInfo
