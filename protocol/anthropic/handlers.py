"""POST /v1/messages and /v1/messages/count_tokens (the Anthropic Messages API).

A message is a chat completion underneath (conversation.py); what is Anthropic's own is the
shape of its content, stop reasons and usage, the stream's events (stream.py) and the error
body, which every failure here takes (errors.py).
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import anyio

from protocol import response_bodies
from protocol.admission import check_capacity
from protocol.anthropic.conversation import (
    anthropic_usage,
    chat_request,
    content_blocks,
    stop_reason,
)
from protocol.anthropic.schemas import (
    CountTokensRequest,
    CountTokensResponse,
    MessagesRequest,
    MessagesResponse,
)
from protocol.anthropic.stream import stream_message
from protocol.converter import parse_body
from protocol.generation.chat_template import render_request
from protocol.generation.engine_calls import generate_all
from protocol.generation.prompts import encode
from protocol.generation.reasoning_parsers import Reasoning
from protocol.http import Request, Response, StreamingResponse
from protocol.model_resolution import MESSAGES, resolve_model, server_state
from protocol.openai.chat import (
    PreparedChat,
    check_chat_request,
    prepare_conversation,
    reply_choice,
)


class PreparedMessage(NamedTuple):
    req: MessagesRequest
    chat: PreparedChat


def prepare_message(request: Request) -> PreparedMessage:
    req = parse_body(request, MessagesRequest)
    served = resolve_model(request, req.model, MESSAGES)
    settings = server_state(request).settings
    chat = chat_request(req)
    limits = check_chat_request(chat, served, settings, num_conversations=1)
    return PreparedMessage(req, prepare_conversation(chat, served, settings, limits))


async def create_message(request: Request) -> Response | StreamingResponse:
    req, chat = await anyio.to_thread.run_sync(prepare_message, request)
    served = chat.served
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    if req.stream:
        check_capacity(served, chat.prompts)  # a real 429, before the stream's 200 goes out
        return StreamingResponse(stream_message(message_id, chat))
    (choice,) = await generate_all(served, message_id, chat.prompts)
    reasoning = Reasoning(chat.thinking)
    reply = reply_choice(0, choice, "assistant", None, chat.plan, None, served, False, reasoning)
    blocks = content_blocks(reply.message)
    reason, sequence = stop_reason(
        choice.finish_reason, choice.stop_reason, bool(reply.message.tool_calls)
    )
    return response_bodies.json_body(
        MessagesResponse(
            id=message_id,
            model=served.name,
            content=blocks,
            stop_reason=reason,
            stop_sequence=sequence,
            usage=anthropic_usage(
                len(chat.prompt_ids), choice.num_output_tokens, choice.num_cached_tokens
            ),
        )
    )


def count_prompt_tokens(request: Request) -> int:
    req = parse_body(request, CountTokensRequest)
    served = resolve_model(request, req.model, MESSAGES)
    settings = server_state(request).settings
    text = render_request(chat_request(req), served, settings)
    max_chars = settings.prompt_chars(served.max_model_len)
    return len(encode(served.tokenizer, text, False, max_chars, "messages"))


async def count_tokens(request: Request) -> Response:
    input_tokens = await anyio.to_thread.run_sync(count_prompt_tokens, request)
    return response_bodies.json_body(CountTokensResponse(input_tokens=input_tokens))
