"""POST /invocations: SageMaker's one entry point for every kind of request.

The body is tried against the request types in vLLM's order (chat, completion, embedding,
classification, score, rerank, pooling) and served by the first route it fits; a body that
fits none is a 400 listing what was expected. Only the APIs some served model can answer
are tried (only the named model's, when the body names one), so an embedding model's
`messages` body reaches embeddings, not chat.
"""

from __future__ import annotations

import anyio
import attrs

from protocol.converter import read_json_object, structure
from protocol.http import Handler, HTTPError, Request, Response, StreamingResponse
from protocol.model_resolution import (
    API_TASKS,
    CHAT,
    CLASSIFY,
    COMPLETIONS,
    EMBEDDINGS,
    POOLING,
    RERANK,
    SCORE,
    server_state,
)
from protocol.openai.chat import create_chat_completion
from protocol.openai.chat_schemas import ChatCompletionRequest
from protocol.openai.completion_schemas import CompletionRequest
from protocol.openai.completions import create_completion
from protocol.pooling.classify import classify
from protocol.pooling.embeddings import create_embedding, create_pooling
from protocol.pooling.schemas import ClassifyRequest, EmbeddingRequest, PoolingRequest
from protocol.pooling.score import SIDE_NAMES, create_rerank, create_score
from protocol.pooling.score_schemas import RerankRequest, ScoreRequest


@attrs.frozen
class Invocation:
    """A route /invocations can hand a body to."""

    request: type  # the body must structure into it
    # ...and hold every key of one of these groups (what the route's own checks require).
    keys: tuple[tuple[str, ...], ...]
    api: str  # model_resolution's name: which served models can answer it
    handler: Handler


_INPUT = (("input",), ("messages",))

# In the order vLLM tries them: a body that fits several goes to the first.
INVOCATIONS = [
    Invocation(ChatCompletionRequest, (("messages",),), CHAT, create_chat_completion),
    Invocation(CompletionRequest, (("prompt",),), COMPLETIONS, create_completion),
    Invocation(EmbeddingRequest, _INPUT, EMBEDDINGS, create_embedding),
    Invocation(ClassifyRequest, _INPUT, CLASSIFY, classify),
    Invocation(ScoreRequest, SIDE_NAMES, SCORE, create_score),
    Invocation(RerankRequest, (("query", "documents"),), RERANK, create_rerank),
    Invocation(PoolingRequest, _INPUT, POOLING, create_pooling),
]


def _answerable(request: Request, body: dict, api: str) -> bool:
    """Whether a served model can answer `api`: the named one, or any if none is named (or
    while nothing is loaded, when the route itself says why it cannot answer)."""
    models = server_state(request).models
    tasks = API_TASKS[api]
    named = body.get("model")
    if isinstance(named, str) and named in models:
        return models[named].task in tasks
    return not models or any(m.task in tasks for m in models.values())


def _fits(body: dict, invocation: Invocation) -> bool:
    if not any(all(body.get(k) is not None for k in group) for group in invocation.keys):
        return False
    try:
        structure(body, invocation.request)
    except HTTPError:
        return False
    return True


def choose_invocation(request: Request) -> Invocation:
    body = read_json_object(request)
    candidates = [i for i in INVOCATIONS if _answerable(request, body, i.api)]
    for invocation in candidates:
        if _fits(body, invocation):
            return invocation
    expected = [i.request.__name__ for i in candidates]
    raise HTTPError(
        400,
        f"Cannot find suitable handler for request. Expected one of: {expected}",
        "BadRequestError",
    )


async def invocations(request: Request) -> Response | StreamingResponse:
    # Matching structures the body up to seven times: off the event loop, as parsing is.
    invocation = await anyio.to_thread.run_sync(choose_invocation, request)
    return await invocation.handler(request)
