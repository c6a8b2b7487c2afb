"""A response streamed as the Responses API's events, in the order the openai SDK expects:

response.created, response.in_progress; for the text, response.output_item.added,
response.content_part.added, response.output_text.delta ..., response.output_text.done,
response.content_part.done, response.output_item.done; for each function call,
response.output_item.added, response.function_call_arguments.delta / .done,
response.output_item.done; then response.completed (or response.incomplete when
max_output_tokens cut it short). Every event carries the next sequence_number.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs

from protocol import response_bodies
from protocol.converter import dumps
from protocol.generation.engine_calls import open_generation
from protocol.generation.logprobs import chat_logprobs
from protocol.openai.chat import PreparedChat, content_piece
from protocol.responses.objects import finished_object
from protocol.responses.schemas import (
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponseStreamEvent,
)

logger = logging.getLogger(__name__)


class _Events:
    def __init__(self) -> None:
        self.sequence_number = 0

    def __call__(self, type_: str, **fields: Any) -> bytes:
        event = ResponseStreamEvent(type=type_, sequence_number=self.sequence_number, **fields)
        self.sequence_number += 1
        return b"event: " + type_.encode() + b"\ndata: " + dumps(event) + b"\n\n"


async def stream_response(
    created: ResponseObject,
    chat: PreparedChat,
    make_id: Callable[[str], str],
    keep: Callable[[ResponseObject], None],
) -> AsyncIterator[bytes]:
    event = _Events()
    served = chat.served
    parser = chat.plan.parser()
    message_id = make_id("msg")
    texts: list[str] = []
    finish_reason, num_output_tokens, num_cached_tokens = "stop", 0, 0
    try:
        yield event("response.created", response=created)
        yield event("response.in_progress", response=created)
        async with open_generation(served, created.id, chat.prompts) as outputs:
            async for _, output in outputs:
                text = content_piece(parser, output)
                if text:
                    if not texts:
                        item = OutputMessage(id=message_id, status="in_progress", content=[])
                        yield event("response.output_item.added", output_index=0, item=item)
                        yield event(
                            "response.content_part.added",
                            item_id=message_id,
                            output_index=0,
                            content_index=0,
                            part=OutputText(text=""),
                        )
                    logprobs = []
                    if chat.logprobs is not None and output.logprobs:
                        logprobs = chat_logprobs(output.logprobs, served.tokenizer)["content"]
                    yield event(
                        "response.output_text.delta",
                        item_id=message_id,
                        output_index=0,
                        content_index=0,
                        delta=text,
                        logprobs=logprobs,
                    )
                    texts.append(text)
                num_output_tokens = output.num_output_tokens
                num_cached_tokens = output.num_cached_tokens
                if output.finished:
                    finish_reason = output.finish_reason or "stop"
        items: list[OutputItem] = []
        if texts:
            part = OutputText(text="".join(texts))
            message = OutputMessage(id=message_id, content=[part])
            for type_, fields in (
                ("response.output_text.done", {"text": part.text, "logprobs": []}),
                ("response.content_part.done", {"part": part}),
            ):
                yield event(type_, item_id=message_id, output_index=0, content_index=0, **fields)
            yield event("response.output_item.done", output_index=0, item=message)
            items.append(message)
        calls = parser.result()[1] if parser is not None else []
        for call in calls:
            index = len(items)
            item = FunctionCallItem(
                id=make_id("fc"),
                call_id=call.id,
                name=call.function.name,
                arguments=call.function.arguments,
            )
            started = attrs.evolve(item, arguments="", status="in_progress")
            yield event("response.output_item.added", output_index=index, item=started)
            yield event(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=index,
                delta=item.arguments,
            )
            yield event(
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=index,
                arguments=item.arguments,
            )
            yield event("response.output_item.done", output_index=index, item=item)
            items.append(item)
        final = finished_object(
            created,
            items,
            finish_reason,
            len(chat.prompt_ids),
            num_output_tokens,
            num_cached_tokens,
        )
        keep(final)
        done = "response.incomplete" if final.status == "incomplete" else "response.completed"
        yield event(done, response=final)
    except Exception as exc:
        logger.exception("response stream %s failed", created.id)
        yield response_bodies.sse_error_event(exc)
