"""POST /v1/responses, GET and DELETE /v1/responses/{response_id}.

A response is a chat completion underneath (conversation.py turns one into the other); what
is its own is the shape of its output, the stream's events (stream.py) and the store.
"""

from __future__ import annotations

from typing import NamedTuple

import anyio

from protocol import response_bodies
from protocol.admission import check_capacity
from protocol.converter import parse_body
from protocol.generation.engine_calls import generate_all
from protocol.generation.reasoning_parsers import Reasoning, reasoning_token_count
from protocol.http import HTTPError, Request, Response, StreamingResponse
from protocol.model_resolution import RESPONSES, resolve_model, server_state
from protocol.openai.chat import (
    PreparedChat,
    check_chat_request,
    prepare_conversation,
    reply_choice,
)
from protocol.openai.chat_schemas import ChatMessageParam
from protocol.responses.conversation import as_messages, chat_request, input_messages, output_items
from protocol.responses.objects import created_object, finished_object, make_id
from protocol.responses.schemas import DeletedResponse, ResponseObject, ResponsesRequest
from protocol.responses.store import ResponseStore, StoredResponse
from protocol.responses.stream import stream_response

# The chat request's field names in its errors, as the Responses request spells them.
_PARAMS = {"max_tokens": "max_output_tokens", "messages": "input", "response_format": "text"}


def _store(request: Request) -> ResponseStore:
    return server_state(request).responses


def _not_found(response_id: str, param: str) -> HTTPError:
    return HTTPError(
        404, f"Response with id '{response_id}' not found.", "invalid_request_error", param
    )


def _renamed(exc: HTTPError) -> HTTPError:
    """A chat error as the Responses request would name its field."""
    param = exc.param or ""
    head = param.split(".")[0].split("[")[0]
    if head not in _PARAMS:
        return exc
    return HTTPError(exc.status, exc.message, exc.err_type, _PARAMS[head] + param[len(head) :])


class PreparedResponse(NamedTuple):
    req: ResponsesRequest
    chat: PreparedChat
    conversation: list[ChatMessageParam]  # the stored one continued, then this input


def prepare_response(request: Request) -> PreparedResponse:
    req = parse_body(request, ResponsesRequest)
    if req.background:
        raise HTTPError(
            400,
            "Background responses are not supported; send background: false.",
            "BadRequestError",
            "background",
        )
    if req.num_choices != 1:
        raise HTTPError(
            400, "The Responses API makes one output; n must be 1.", "BadRequestError", "n"
        )
    served = resolve_model(request, req.model, RESPONSES)
    settings = server_state(request).settings
    history: list[ChatMessageParam] = []
    if req.previous_response_id is not None:
        stored = _store(request).get(req.previous_response_id)
        if stored is None:
            raise _not_found(req.previous_response_id, "previous_response_id")
        history = stored.conversation
    conversation = history + input_messages(req.input)
    try:
        chat = chat_request(req, conversation)
        limits = check_chat_request(chat, served, settings, num_conversations=1)
        prepared = prepare_conversation(chat, served, settings, limits)
    except HTTPError as exc:
        raise _renamed(exc) from None
    return PreparedResponse(req, prepared, conversation)


async def create_response(request: Request) -> Response | StreamingResponse:
    prepared = await anyio.to_thread.run_sync(prepare_response, request)
    req, chat = prepared.req, prepared.chat
    served = chat.served
    created = created_object(req, served.name)
    store = _store(request)

    def keep(final: ResponseObject) -> None:
        if req.store:
            conversation = prepared.conversation + as_messages(final.output)
            store.put(StoredResponse(final, conversation))

    if req.stream:
        check_capacity(served, chat.prompts)  # a real 429, before the stream's 200 goes out
        return StreamingResponse(stream_response(created, chat, make_id, keep))
    (choice,) = await generate_all(served, created.id, chat.prompts)
    reasoning = Reasoning(chat.thinking)
    reply = reply_choice(
        0, choice, "assistant", None, chat.plan, chat.logprobs, served, False, reasoning
    )
    logprobs = reply.logprobs["content"] if reply.logprobs is not None else []
    final = finished_object(
        created,
        output_items(reply.message, make_id, logprobs),
        choice.finish_reason,
        len(chat.prompt_ids),
        choice.num_output_tokens,
        choice.num_cached_tokens,
        reasoning_token_count(choice.token_ids, chat.thinking, served.tokenizer),
    )
    keep(final)
    return response_bodies.json_body(final)


def _response_id(request: Request) -> str:
    return request.path_params["response_id"]


async def retrieve_response(request: Request) -> Response:
    response_id = _response_id(request)
    stored = _store(request).get(response_id)
    if stored is None:
        raise _not_found(response_id, "response_id")
    return response_bodies.json_body(stored.response)


async def delete_response(request: Request) -> Response:
    response_id = _response_id(request)
    if not _store(request).delete(response_id):
        raise _not_found(response_id, "response_id")
    return response_bodies.json_body(DeletedResponse(id=response_id))
