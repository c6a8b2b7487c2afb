"""POST /tokenize and POST /detokenize (vLLM's custom APIs).

/tokenize has two forms told apart by the presence of `messages`; it reports the count but,
as in vLLM, does not enforce max_model_len.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

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


async def tokenizer_info(request: Request) -> Response:
    """vLLM's /tokenizer_info: the tokenizer's configuration as loaded (file paths left out),
    its class and the model's chat template; `?model=` picks a model (default: the first).
    Off unless enable_tokenizer_info_endpoint is set (a 404 then, as for any unknown route)."""
    if not server_state(request).settings.enable_tokenizer_info_endpoint:
        raise HTTPError(404, "Not Found", "NotFoundError")
    query = urllib.parse.parse_qs(request.query_string.decode("latin-1"))
    served = resolve_model(request, (query.get("model") or [None])[0])
    tokenizer = served.tokenizer
    config = {
        key: _json_value(value)
        for key, value in (getattr(tokenizer, "init_kwargs", None) or {}).items()
        if key not in ("vocab_file", "merges_file", "tokenizer_file", "name_or_path")
    }
    config["tokenizer_class"] = type(tokenizer).__name__
    if served.chat_template:
        config["chat_template"] = served.chat_template
    return response_bodies.json_body(config)


def _json_value(value: Any) -> Any:
    """Special tokens (AddedToken) as their text, huge ints as floats, what JSON cannot hold
    as its str()."""
    if hasattr(value, "content"):
        return value.content
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return float(value)  # model_max_length is often 10^30, past what JSON encoders take
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
