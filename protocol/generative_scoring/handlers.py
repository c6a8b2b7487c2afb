"""POST /generative_scoring: the next-token probabilities of given label tokens after
query + item, for each item.

Every item is one prompt of a single greedy step: the engine prefills them together (they
share the query, so prefix caching serves it once) and reports the labels' log-probabilities
from the model's raw distribution; nothing is decoded past that one position.
"""

from __future__ import annotations

import math
from typing import Any

import anyio

from engine.sampling_params import SamplingParams
from protocol import response_bodies
from protocol.converter import parse_body
from protocol.generation.engine_calls import generate_all
from protocol.generation.prompts import check_token_ids, encode
from protocol.generation.sampling import resolve_max_tokens
from protocol.generative_scoring.schemas import (
    GenerativeScoringRequest,
    GenerativeScoringResponse,
)
from protocol.http import Request, Response, bad_request
from protocol.model_resolution import GENERATIVE_SCORING, resolve_model, server_state
from protocol.pooling.score_schemas import ScoreData
from protocol.served_model import ServedModel


def _check_labels(labels: list[int], vocab_size: int) -> None:
    if not labels:
        raise bad_request("label_token_ids must contain at least one token ID.", "label_token_ids")
    if len(labels) > vocab_size:
        raise bad_request(
            f"label_token_ids has {len(labels)} entries, more than the vocabulary's "
            f"{vocab_size} tokens.",
            "label_token_ids",
        )
    for token_id in labels:
        if not 0 <= token_id < vocab_size:
            raise bad_request(
                f"label_token_id {token_id} is out of vocabulary range [0, {vocab_size}). "
                "Please provide valid token IDs.",
                "label_token_ids",
            )


def _token_ids(
    value: Any, add_special_tokens: bool, served: ServedModel, max_chars: int, param: str
) -> list[int]:
    if isinstance(value, str):
        ids = encode(served.tokenizer, value, add_special_tokens, max_chars, param)
    else:
        ids = value
    check_token_ids(ids, served.vocab_size, param)
    return ids


def prepare_scoring(
    request: Request,
) -> tuple[GenerativeScoringRequest, ServedModel, list[list[int]]]:
    """The request, its model and one prompt per item (in a worker thread: it tokenizes)."""
    req = parse_body(request, GenerativeScoringRequest)
    served = resolve_model(request, req.model, GENERATIVE_SCORING)
    settings = server_state(request).settings
    _check_labels(req.label_token_ids, served.vocab_size)
    query, items = req.query, req.items
    if not (isinstance(query, str) or all(isinstance(t, int) for t in query)):
        raise bad_request("query must be a string or a list of token ids.", "query")
    if isinstance(items, str) or (items and isinstance(items[0], int)):
        raise bad_request("items must be a list of strings or a list of token id lists.", "items")
    if not items:
        raise bad_request("items must contain at least one item.", "items")
    if len(items) > settings.sequences_per_request:
        raise bad_request(
            f"items has {len(items)} entries; this server scores at most "
            f"{settings.sequences_per_request} per request (max_sequences_per_request).",
            "items",
        )
    max_chars = settings.prompt_chars(served.max_model_len)
    query_ids = _token_ids(query, req.add_special_tokens, served, max_chars, "query")
    prompts = []
    for item in items:
        # No special tokens inside the prompt: the query already has the BOS.
        item_ids = _token_ids(item, False, served, max_chars, "items")
        ids = item_ids + query_ids if req.item_first else query_ids + item_ids
        resolve_max_tokens(1, len(ids), served.max_model_len)  # room for the scored position
        prompts.append(ids)
    return req, served, prompts


def label_probabilities(logprobs: list[float], apply_softmax: bool) -> list[float]:
    """The labels' probabilities: the model's own, or renormalised among the labels."""
    if not apply_softmax:
        return [math.exp(x) for x in logprobs]
    peak = max(logprobs)
    weights = [math.exp(x - peak) for x in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


async def create_generative_scoring(request: Request) -> Response:
    req, served, prompts = await anyio.to_thread.run_sync(prepare_scoring, request)
    response_id = response_bodies.response_id("generative-scoring-", request, req.request_id)
    created = response_bodies.created_now()
    # Greedy with nothing altering the logits: the reported distribution is the model's own.
    params = SamplingParams(
        max_tokens=1, temperature=0.0, logprobs=0, logprob_token_ids=tuple(req.label_token_ids)
    )
    finished = await generate_all(served, response_id, [(ids, params) for ids in prompts])
    data = []
    for index, choice in enumerate(finished):
        labels = [logprob for _, logprob in choice.logprobs[0].named]
        score = label_probabilities(labels, req.apply_softmax)[0]
        data.append(ScoreData(index=index, score=score))
    return response_bodies.json_body(
        GenerativeScoringResponse(
            id=response_id,
            created=created,
            model=served.name,
            data=data,
            usage=response_bodies.usage(
                sum(map(len, prompts)),
                sum(c.num_output_tokens for c in finished),
                sum(c.num_cached_tokens for c in finished),  # the query, after the first
            ),
        )
    )
