"""A message streamed as Anthropic's events: message_start; for the thinking (with a reasoning
parser), the text and then each tool call, content_block_start, content_block_delta
(thinking_delta, then one signature_delta / text_delta / input_json_delta) ...,
content_block_stop; then message_delta (stop_reason, output usage) and message_stop. A failure
once the stream is open is an `error` event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from protocol.anthropic.conversation import (
    anthropic_usage,
    content_blocks,
    stop_reason,
    thinking_signature,
)
from protocol.anthropic.errors import anthropic_error
from protocol.anthropic.schemas import (
    ContentBlock,
    MessagesResponse,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)
from protocol.converter import dumps
from protocol.generation.engine_calls import open_generation
from protocol.generation.reasoning_parsers import Reasoning
from protocol.openai.chat import PreparedChat, reply_piece
from protocol.openai.chat_schemas import ChatMessage
from protocol.response_bodies import sse_json

logger = logging.getLogger(__name__)


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + sse_json(data) + b"\n\n"


async def stream_message(message_id: str, chat: PreparedChat) -> AsyncIterator[bytes]:
    served = chat.served
    parser = chat.plan.parser()
    thinker = Reasoning(chat.thinking).parser()
    num_prompt_tokens = len(chat.prompt_ids)
    open_block: str | None = None  # "thinking" or "text": the block streaming now
    index = 0  # the next block's
    finish_reason, engine_stop, num_output_tokens = "stop", None, 0
    try:
        started = MessagesResponse(
            id=message_id,
            model=served.name,
            content=[],
            stop_reason=None,
            usage=anthropic_usage(num_prompt_tokens, 0, 0),
        )
        yield _event("message_start", {"type": "message_start", "message": started})
        async with open_generation(served, message_id, chat.prompts) as outputs:
            async for _, output in outputs:
                thoughts, parsed = reply_piece(thinker, parser, output.new_text, output.finished)
                for kind, piece in (("thinking", thoughts), ("text", parsed.content)):
                    if not piece:
                        continue
                    if open_block != kind:
                        if open_block is not None:
                            for event in _close(index - 1, open_block):
                                yield event
                        block: ContentBlock = TextBlock(text="")
                        if kind == "thinking":
                            block = ThinkingBlock(thinking="", signature="")
                        yield _block_start(index, block)
                        open_block, index = kind, index + 1
                    yield _block_delta(index - 1, {"type": f"{kind}_delta", kind: piece})
                num_output_tokens = output.num_output_tokens
                if output.finished:
                    finish_reason = output.finish_reason or "stop"
                    engine_stop = output.stop_reason
        if open_block is not None:
            for event in _close(index - 1, open_block):
                yield event
        calls = parser.result()[1] if parser is not None else []
        for block in content_blocks(ChatMessage(role="assistant", tool_calls=calls)):
            assert isinstance(block, ToolUseBlock)
            yield _block_start(index, ToolUseBlock(id=block.id, name=block.name, input={}))
            partial = dumps(block.input).decode()
            yield _block_delta(index, {"type": "input_json_delta", "partial_json": partial})
            yield _block_stop(index)
            index += 1
        reason, sequence = stop_reason(finish_reason, engine_stop, bool(calls))
        yield _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": {"output_tokens": num_output_tokens},
            },
        )
        yield _event("message_stop", {"type": "message_stop"})
    except Exception as exc:
        logger.exception("message stream %s failed", message_id)
        yield _event("error", anthropic_error(exc))


def _close(index: int, kind: str) -> list[bytes]:
    """A thinking or text block's end: a thinking block's signature comes just before it."""
    events = []
    if kind == "thinking":
        signature = {"type": "signature_delta", "signature": thinking_signature()}
        events.append(_block_delta(index, signature))
    return [*events, _block_stop(index)]


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _block_start(index: int, block: ContentBlock) -> bytes:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", data)


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})
