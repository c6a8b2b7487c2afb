"""POST /v1/chat/completions/batch: several conversations in one request, one choice each.

Each conversation is rendered and validated as a chat request of its own; all of them go to
the engine together, so they are decoded in the same batch.
"""

from __future__ import annotations

import anyio
import attrs

from protocol import response_bodies
from protocol.converter import parse_body
from protocol.generation.engine_calls import generate_all
from protocol.http import Request, Response, bad_request
from protocol.model_resolution import CHAT, resolve_model, server_state
from protocol.openai.chat import (
    PreparedChat,
    check_chat_request,
    echo_text,
    prepare_conversation,
    reply_choice,
    response_role,
)
from protocol.openai.chat_schemas import (
    BatchChatCompletionRequest,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageParam,
)
from protocol.served_model import ServedModel


def _check_batch_mode(batch: BatchChatCompletionRequest) -> None:
    """What a batch leaves out, each refused by name rather than silently ignored."""
    if not batch.messages:
        raise bad_request("messages must hold at least one conversation.", "messages")
    for conversation in batch.messages:
        if not conversation:
            raise bad_request("Each conversation in messages must hold a message.", "messages")
    if batch.stream:
        raise bad_request("Batch chat completions do not support streaming.", "stream")
    if batch.tools:
        raise bad_request("Batch chat completions do not support tools.", "tools")
    if batch.tool_choice not in (None, "none"):
        raise bad_request("Batch chat completions do not support tool_choice.", "tool_choice")
    if batch.num_choices != 1:
        raise bad_request(
            "Batch chat completions do not support `n > 1`. Please set `n` to 1.", "n"
        )


def _single(
    batch: BatchChatCompletionRequest, messages: list[ChatMessageParam]
) -> ChatCompletionRequest:
    """The chat request for one of the batch's conversations."""
    fields = attrs.asdict(batch, recurse=False)
    fields["messages"] = messages
    return ChatCompletionRequest(**fields)


def prepare_batch(
    request: Request,
) -> tuple[BatchChatCompletionRequest, ServedModel, list[PreparedChat]]:
    """Everything before the engine, for every conversation (in a worker thread)."""
    batch = parse_body(request, BatchChatCompletionRequest)
    _check_batch_mode(batch)
    served = resolve_model(request, batch.model, CHAT)
    settings = server_state(request).settings
    limits = check_chat_request(batch, served, settings, num_conversations=len(batch.messages))
    singles = [_single(batch, messages) for messages in batch.messages]
    return batch, served, [prepare_conversation(r, served, settings, limits) for r in singles]


async def create_batch_chat_completion(request: Request) -> Response:
    # Off the event loop: rendering and tokenizing grow with the batch.
    batch, served, conversations = await anyio.to_thread.run_sync(prepare_batch, request)
    response_id = response_bodies.chat_completion_id(request, batch.request_id)
    created = response_bodies.created_now()
    prompts = [c.prompts[0] for c in conversations]
    finished = await generate_all(served, response_id, prompts)
    choices = []
    for i, (conversation, choice) in enumerate(zip(conversations, finished, strict=True)):
        role = response_role(conversation.req)
        echo = echo_text(conversation.req, role)
        choices.append(
            reply_choice(
                i,
                choice,
                role,
                echo,
                conversation.plan,
                conversation.logprobs,
                served,
                batch.return_token_ids,
            )
        )
    return response_bodies.json_body(
        ChatCompletionResponse(
            id=response_id,
            created=created,
            model=served.name,
            choices=choices,
            usage=response_bodies.usage(
                sum(len(c.prompt_ids) for c in conversations),
                sum(c.num_output_tokens for c in finished),
                sum(c.num_cached_tokens for c in finished),
            ),
        )
    )
