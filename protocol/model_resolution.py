"""Which served model answers a request's `model` (vLLM's rules), or the client-visible reason
why none.

Each model serves one task (configs/settings.py TASKS); each API names the tasks it can use.
"""

from __future__ import annotations

from protocol.http import HTTPError, Request
from protocol.served_model import ServedModel
from protocol.server_state import ServerState

COMPLETIONS = "Completions API"
CHAT = "Chat Completions API"
RESPONSES = "Responses API"
MESSAGES = "Messages API"
EMBEDDINGS = "Embeddings API"
POOLING = "Pooling API"
SCORE = "Score API"
RERANK = "Rerank API"
CLASSIFY = "Classification API"
GENERATIVE_SCORING = "Generative Scoring API"

# API -> the engine tasks that can serve it. An embedding model scores and reranks by cosine
# similarity (a bi-encoder); a cross-encoder ("score") reads each pair jointly and also
# classifies (its one label).
API_TASKS: dict[str, tuple[str, ...]] = {
    COMPLETIONS: ("generate",),
    CHAT: ("generate",),
    RESPONSES: ("generate",),
    MESSAGES: ("generate",),
    EMBEDDINGS: ("embed",),
    POOLING: ("embed", "score", "classify"),
    SCORE: ("score", "embed"),
    RERANK: ("score", "embed"),
    CLASSIFY: ("classify", "score"),
    GENERATIVE_SCORING: ("generate",),
}


def server_state(request: Request) -> ServerState:
    return request.state["server"]


def resolve_model(request: Request, model: str | None, api: str | None = None) -> ServedModel:
    """The model named by `model`, which must serve `api` (None: any task will do).

    An absent or empty `model` means the first served model that can serve `api`; an unknown
    name is a 404, a model of the wrong task a 400 naming both.
    """
    server = server_state(request)
    if not server.models:
        if server.status == "failed":
            raise HTTPError(
                503, f"The model failed to load: {server.error}", "ServiceUnavailableError"
            )
        raise HTTPError(
            503,
            "The model is still loading; retry once GET /health returns 200.",
            "ServiceUnavailableError",
        )
    tasks = API_TASKS[api] if api is not None else None
    if not model:
        served = list(server.models.values())
        capable = [m for m in served if tasks is None or m.task in tasks]
        found = (capable or served)[0]
    else:
        found = server.models.get(model)
        if found is None:
            raise HTTPError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    if tasks is not None and found.task not in tasks:
        needed = " or ".join(f"`{t}`" for t in tasks)
        raise HTTPError(
            400,
            f"The model `{found.name}` does not support the {api}: it is served "
            f"for the `{found.task}` task, and the {api} needs a model served for {needed}.",
            "BadRequestError",
            "model",
        )
    return found
