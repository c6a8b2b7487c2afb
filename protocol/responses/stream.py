"""A response streamed as the Responses API's events, in the order the openai SDK expects:

response.created, response.in_progress; for the thinking (with a reasoning parser) and then
the text, each an item: response.output_item.added, response.content_part.added,
response.reasoning_text.delta / response.output_text.delta ..., the matching .done,
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

from engine.outputs import RequestOutput
from protocol import response_bodies
from protocol.generation.engine_calls import open_generation
from protocol.generation.logprobs import chat_logprobs
from protocol.generation.reasoning_parsers import Reasoning, reasoning_token_count
from protocol.openai.chat import PreparedChat, reply_piece
from protocol.responses.objects import finished_object
from protocol.responses.schemas import (
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
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
        return b"event: " + type_.encode() + b"\ndata: " + response_bodies.sse_json(event) + b"\n\n"


@attrs.define
class _TextItem:
    """The reasoning item or the message whose text is streaming now."""

    reasoning: bool
    id: str
    output_index: int
    texts: list[str] = attrs.field(factory=list)

    @property
    def events(self) -> str:
        """The prefix of its delta and done events."""
        return "response.reasoning_text" if self.reasoning else "response.output_text"

    def part(self, text: str) -> OutputText | ReasoningText:
        return ReasoningText(text=text) if self.reasoning else OutputText(text=text)

    def item(self, status: str, text: str | None = None) -> ReasoningItem | OutputMessage:
        content: Any = [] if text is None else [self.part(text)]
        if self.reasoning:
            return ReasoningItem(id=self.id, content=content, status=status)
        return OutputMessage(id=self.id, content=content, status=status)


def _text_logprobs(chat: PreparedChat, output: RequestOutput) -> list[dict[str, Any]]:
    if chat.logprobs is None or not output.logprobs:
        return []
    return chat_logprobs(output.logprobs, chat.served.tokenizer)["content"]


async def stream_response(
    created: ResponseObject,
    chat: PreparedChat,
    make_id: Callable[[str], str],
    keep: Callable[[ResponseObject], None],
) -> AsyncIterator[bytes]:
    event = _Events()
    served = chat.served
    parser = chat.plan.parser()
    thinker = Reasoning(chat.thinking).parser()
    items: list[OutputItem] = []  # the finished ones
    current: _TextItem | None = None
    token_ids: list[int] = []
    finish_reason, num_output_tokens, num_cached_tokens = "stop", 0, 0

    def start(text_item: _TextItem) -> list[bytes]:
        index = text_item.output_index
        return [
            event(
                "response.output_item.added", output_index=index, item=text_item.item("in_progress")
            ),
            event(
                "response.content_part.added",
                item_id=text_item.id,
                output_index=index,
                content_index=0,
                part=text_item.part(""),
            ),
        ]

    def finish(text_item: _TextItem) -> list[bytes]:
        text = "".join(text_item.texts)
        where = {
            "item_id": text_item.id,
            "output_index": text_item.output_index,
            "content_index": 0,
        }
        done = {"text": text} if text_item.reasoning else {"text": text, "logprobs": []}
        item = text_item.item("completed", text)
        items.append(item)
        return [
            event(text_item.events + ".done", **where, **done),
            event("response.content_part.done", **where, part=text_item.part(text)),
            event("response.output_item.done", output_index=text_item.output_index, item=item),
        ]

    try:
        yield event("response.created", response=created)
        yield event("response.in_progress", response=created)
        async with open_generation(served, created.id, chat.prompts) as outputs:
            async for _, output in outputs:
                token_ids += output.new_token_ids
                thoughts, parsed = reply_piece(thinker, parser, output.new_text, output.finished)
                for reasoning, piece in ((True, thoughts), (False, parsed.content)):
                    if not piece:
                        continue
                    if current is None or current.reasoning != reasoning:
                        if current is not None:
                            for done in finish(current):
                                yield done
                        current = _TextItem(
                            reasoning, make_id("rs" if reasoning else "msg"), len(items)
                        )
                        for added in start(current):
                            yield added
                    extra = {} if reasoning else {"logprobs": _text_logprobs(chat, output)}
                    yield event(
                        current.events + ".delta",
                        item_id=current.id,
                        output_index=current.output_index,
                        content_index=0,
                        delta=piece,
                        **extra,
                    )
                    current.texts.append(piece)
                num_output_tokens = output.num_output_tokens
                num_cached_tokens = output.num_cached_tokens
                if output.finished:
                    finish_reason = output.finish_reason or "stop"
        if current is not None:
            for done in finish(current):
                yield done
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
            reasoning_token_count(token_ids, chat.thinking, served.tokenizer),
        )
        keep(final)
        done = "response.incomplete" if final.status == "incomplete" else "response.completed"
        yield event(done, response=final)
    except Exception as exc:
        logger.exception("response stream %s failed", created.id)
        yield response_bodies.sse_error_event(exc)
