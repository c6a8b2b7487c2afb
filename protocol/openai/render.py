"""POST /v1/chat/completions/render and /v1/completions/render: the token-in request that a
chat or completion request would submit (token ids and sampling parameters), without
generating. Everything a real request goes through runs (template, tokenizing, validation,
grammar), so a request that renders is one that would be accepted."""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from engine.sampling_params import SamplingParams
from protocol import response_bodies
from protocol.http import Request, Response
from protocol.openai.chat import prepare_chat
from protocol.openai.completions import prepare_completion
from protocol.openai.render_schemas import GenerateRequest

# Engine fields that are not sampling parameters a client could send back.
_INTERNAL = frozenset({"grammar", "bad_words_token_ids"})


async def render_chat_completion(request: Request) -> Response:
    prepared = await anyio.to_thread.run_sync(prepare_chat, request)
    req = prepared.req
    return response_bodies.json_body(
        _generate_request(
            response_bodies.chat_completion_id(request, req.request_id),
            prepared.served.name,
            prepared.prompt_ids,
            prepared.prompts[0][1],  # the first choice's: the others differ only in seed
            req,
        )
    )


async def render_completion(request: Request) -> Response:
    prepared = await anyio.to_thread.run_sync(prepare_completion, request)
    req, served = prepared.req, prepared.served
    base = response_bodies.completion_id(request, req.request_id)
    n = req.num_choices
    return response_bodies.json_body(
        [
            _generate_request(f"{base}-{i}", served.name, ids, prepared.prompts[i * n][1], req)
            for i, ids in enumerate(prepared.prompt_ids)
        ]
    )


def _generate_request(
    request_id: str, model: str, token_ids: list[int], params: SamplingParams, req: Any
) -> GenerateRequest:
    return GenerateRequest(
        request_id=request_id,
        token_ids=token_ids,
        sampling_params=sampling_params_json(params),
        model=model,
        stream=bool(req.stream),
        stream_options=attrs.asdict(req.stream_options) if req.stream_options else None,
    )


def sampling_params_json(params: SamplingParams) -> dict[str, Any]:
    """The sampling parameters under vLLM's names: what /v1/generate-style clients send."""
    fields = {k: v for k, v in attrs.asdict(params, recurse=False).items() if k not in _INTERNAL}
    fields["stop"] = list(params.stop)
    fields["stop_token_ids"] = list(params.stop_token_ids)
    fields["logit_bias"] = {str(token): bias for token, bias in params.logit_bias} or None
    if params.allowed_token_ids is not None:
        fields["allowed_token_ids"] = list(params.allowed_token_ids)
    if params.grammar is not None:
        fields["structured_outputs"] = {"grammar": params.grammar}
    return fields
