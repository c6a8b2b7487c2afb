"""POST /score (+ /v1/score) and POST /rerank (+ /v1/rerank, /v2/rerank).

A cross-encoder (task "score") reads each (query, document) pair as one input and its
activated logit is the score. An embedding model scores as a bi-encoder: the cosine similarity
of the two texts' embeddings, each text embedded once.
"""

from __future__ import annotations

from typing import Any

import anyio

from protocol import response_bodies
from protocol.converter import parse_body
from protocol.generation.request_schemas import UsageInfo
from protocol.http import Request, Response, bad_request
from protocol.model_resolution import RERANK, SCORE, resolve_model
from protocol.pooling.inputs import (
    EMPTY_INPUT_MESSAGE,
    check_length,
    encode_texts,
    pooled_vectors,
    truncation_length,
)
from protocol.pooling.score_schemas import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
)
from protocol.served_model import ServedModel

# vLLM's names for the two sides, in the order they are looked for.
SIDE_NAMES = (
    ("text_1", "text_2"),
    ("queries", "documents"),
    ("queries", "items"),
    ("data_1", "data_2"),
)


async def score_pairs(
    served: ServedModel, queries: list[str], documents: list[str], keep: int | None
) -> tuple[list[float], int]:
    """Scores query i against document i, where a single query stands for every document.
    Returns the scores and the number of prompt tokens read."""
    if served.task == "embed":
        from torch.nn.functional import cosine_similarity  # torch loads with the engines

        query_ids, doc_ids = await anyio.to_thread.run_sync(
            lambda: (
                encode_texts(served, queries, True, keep),
                encode_texts(served, documents, True, keep),
            )
        )
        vectors = await pooled_vectors(served, query_ids + doc_ids)
        query_vectors, doc_vectors = vectors[: len(queries)], vectors[len(queries) :]
        if len(queries) == 1:
            query_vectors = query_vectors.expand(len(documents), -1)
        scores = cosine_similarity(query_vectors, doc_vectors, dim=-1)
        tokens = sum(len(ids) for ids in query_ids + doc_ids)
        return scores.cpu().tolist(), tokens
    if any(not text for text in queries + documents):
        raise bad_request(EMPTY_INPUT_MESSAGE, "documents")
    pair_queries = queries * len(documents) if len(queries) == 1 else queries
    options: dict[str, Any] = {"truncation": True, "max_length": keep} if keep else {}
    encoded = await anyio.to_thread.run_sync(
        lambda: served.tokenizer(pair_queries, documents, **options)
    )
    token_ids = [list(ids) for ids in encoded["input_ids"]]
    for ids in token_ids:
        check_length(len(ids), served.max_model_len)
    types = encoded.get("token_type_ids")
    outputs = await pooled_vectors(
        served, token_ids, [list(t) for t in types] if types is not None else None
    )
    return outputs[:, 0].cpu().tolist(), sum(len(ids) for ids in token_ids)


def _sides(req: ScoreRequest) -> tuple[list[str], list[str], str, str]:
    for first, second in SIDE_NAMES:
        left, right = getattr(req, first), getattr(req, second)
        if left is not None and right is not None:
            break
    else:
        raise bad_request(
            "Send the two sides to score as text_1 and text_2 (or queries and documents).",
            "text_1",
        )
    left = [left] if isinstance(left, str) else list(left)
    right = [right] if isinstance(right, str) else list(right)
    if not left or not right:
        raise bad_request(EMPTY_INPUT_MESSAGE, first if not left else second)
    if len(left) != 1 and len(left) != len(right):
        raise bad_request(
            f"{first} and {second} must have the same length, or {first} must be a single "
            f"text: got {len(left)} and {len(right)}.",
            second,
        )
    return left, right, first, second


async def create_score(request: Request) -> Response:
    req = parse_body(request, ScoreRequest)
    served = resolve_model(request, req.model, SCORE)
    queries, documents, _, _ = _sides(req)
    keep = truncation_length(req.truncate_prompt_tokens, served.max_model_len)
    scores, tokens = await score_pairs(served, queries, documents, keep)
    return response_bodies.json_body(
        ScoreResponse(
            id=response_bodies.response_id("score-", request, req.request_id),
            created=response_bodies.created_now(),
            model=served.name,
            data=[ScoreData(index=i, score=s) for i, s in enumerate(scores)],
            usage=UsageInfo(prompt_tokens=tokens, total_tokens=tokens),
        )
    )


async def create_rerank(request: Request) -> Response:
    req = parse_body(request, RerankRequest)
    served = resolve_model(request, req.model, RERANK)
    if not req.documents:
        raise bad_request(EMPTY_INPUT_MESSAGE, "documents")
    if req.top_n < 0:
        raise bad_request("top_n must be 0 (every document) or positive.", "top_n")
    keep = truncation_length(req.truncate_prompt_tokens, served.max_model_len)
    scores, tokens = await score_pairs(served, [req.query], list(req.documents), keep)
    ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    if req.top_n:
        ranked = ranked[: req.top_n]
    results = [
        RerankResult(
            index=i,
            document=RerankDocument(text=req.documents[i]) if req.return_documents else None,
            relevance_score=scores[i],
        )
        for i in ranked
    ]
    return response_bodies.json_body(
        RerankResponse(
            id=response_bodies.response_id("score-", request, req.request_id),
            model=served.name,
            usage=RerankUsage(prompt_tokens=tokens, total_tokens=tokens),
            results=results,
        )
    )
