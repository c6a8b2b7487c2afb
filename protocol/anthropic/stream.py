"""A message streamed as Anthropic's events: message_start; for the text and then each tool
call, content_block_start, content_block_delta (text_delta / input_json_delta) ...,
content_block_stop; then message_delta (stop_reason, output usage) and message_stop. A failure
once the stream is open is an `error` event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from protocol.anthropic.conversation import anthropic_usage, content_blocks, stop_reason
from protocol.anthropic.errors import anthropic_error
from protocol.anthropic.schemas import MessagesResponse, TextBlock, ToolUseBlock
from protocol.converter import dumps
from protocol.generation.engine_calls import open_generation
from protocol.openai.chat import PreparedChat, content_piece
from protocol.openai.chat_schemas import ChatMessage

logger = logging.getLogger(__name__)


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


async def stream_message(message_id: str, chat: PreparedChat) -> AsyncIterator[bytes]:
    served = chat.served
    parser = chat.plan.parser()
    num_prompt_tokens = len(chat.prompt_ids)
    text_open = False
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
                text = content_piece(parser, output)
                if text:
                    if not text_open:
                        yield _block_start(0, TextBlock(text=""))
                        text_open = True
                    delta = {"type": "text_delta", "text": text}
                    yield _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                num_output_tokens = output.num_output_tokens
                if output.finished:
                    finish_reason = output.finish_reason or "stop"
                    engine_stop = output.stop_reason
        index = 0
        if text_open:
            yield _block_stop(0)
            index = 1
        calls = parser.result()[1] if parser is not None else []
        for block in content_blocks(ChatMessage(role="assistant", tool_calls=calls)):
            assert isinstance(block, ToolUseBlock)
            yield _block_start(index, ToolUseBlock(id=block.id, name=block.name, input={}))
            delta = {"type": "input_json_delta", "partial_json": dumps(block.input).decode()}
            yield _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
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


def _block_start(index: int, block: TextBlock | ToolUseBlock) -> bytes:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", data)


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})
