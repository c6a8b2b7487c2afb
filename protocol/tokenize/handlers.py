"""POST /tokenize and POST /detokenize (vLLM's custom APIs).

/tokenize has two forms told apart by the presence of `messages`; it reports the count but,
as in vLLM, does not enforce max_model_len.
"""

from __future__ import annotations

import anyio

from protocol import response_bodies
from protocol.converter import parse_body, read_json_object, structure
from protocol.generation.chat_template import render_request
from protocol.generation.prompts import encode
from protocol.http import HTTPError, Request, Response
from protocol.model_resolution import resolve_model, server_state
from protocol.tokenize.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
)


async def tokenize(request: Request) -> Response:
    # Rendering and tokenizing grow with the request: a worker thread does them.
    return await anyio.to_thread.run_sync(_tokenize, request)


def _tokenize(request: Request) -> Response:
    body = read_json_object(request)
    req: TokenizeChatRequest | TokenizeCompletionRequest
    if "messages" in body:
        req = structure(body, TokenizeChatRequest)
        served = resolve_model(request, req.model)
        text = render_request(req, served, server_state(request).settings)
    else:
        req = structure(body, TokenizeCompletionRequest)
        served = resolve_model(request, req.model)
        text = req.prompt
    max_chars = server_state(request).settings.prompt_chars(served.max_model_len)
    tokens = encode(served.tokenizer, text, req.add_special_tokens, max_chars)
    token_strs = None
    if req.return_token_strs:
        token_strs = list(served.tokenizer.convert_ids_to_tokens(tokens))
    return response_bodies.json_body(
        TokenizeResponse(
            count=len(tokens),
            max_model_len=served.max_model_len,
            tokens=tokens,
            token_strs=token_strs,
        )
    )


async def detokenize(request: Request) -> Response:
    return await anyio.to_thread.run_sync(_detokenize, request)


def _detokenize(request: Request) -> Response:
    req = parse_body(request, DetokenizeRequest)
    served = resolve_model(request, req.model)
    for i, token in enumerate(req.tokens):
        if not 0 <= token < served.vocab_size:
            raise HTTPError(
                400,
                f"Token id {token} is out of vocabulary (vocabulary size: {served.vocab_size}).",
                "BadRequestError",
                f"tokens[{i}]",
            )
    return response_bodies.json_body(DetokenizeResponse(prompt=served.tokenizer.decode(req.tokens)))
