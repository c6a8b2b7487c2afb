"""The response object at its two moments: created (in progress, nothing out yet) and
finished (its output items, status and usage)."""

from __future__ import annotations

import uuid

import attrs

from protocol import response_bodies
from protocol.responses.schemas import (
    OutputItem,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    TextConfig,
    TextFormat,
)


def make_id(prefix: str) -> str:
    """resp_..., msg_..., fc_...: OpenAI's prefixes on 32 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}"


def created_object(req: ResponsesRequest, model: str) -> ResponseObject:
    text = req.text
    if text is None or text.format is None:
        text = TextConfig(format=TextFormat(type="text"))
    return ResponseObject(
        id=make_id("resp"),
        created_at=response_bodies.created_now(),
        model=model,
        status="in_progress",
        output=[],
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        metadata=req.metadata,
        parallel_tool_calls=req.parallel_tool_calls,
        previous_response_id=req.previous_response_id,
        temperature=req.temperature,
        top_p=req.top_p,
        tool_choice=req.tool_choice,
        tools=req.tools or [],
        text=text,
        truncation=req.truncation,
        store=req.store,
        user=req.user,
    )


def finished_object(
    created: ResponseObject,
    output: list[OutputItem],
    finish_reason: str,
    num_prompt_tokens: int,
    num_output_tokens: int,
    num_cached_tokens: int,
    num_reasoning_tokens: int = 0,
) -> ResponseObject:
    """`created` with its output: "incomplete" when max_output_tokens cut it short."""
    incomplete = finish_reason == "length"
    return attrs.evolve(
        created,
        status="incomplete" if incomplete else "completed",
        output=output,
        incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
        usage=ResponseUsage(
            input_tokens=num_prompt_tokens,
            input_tokens_details={"cached_tokens": num_cached_tokens},
            output_tokens=num_output_tokens,
            output_tokens_details={"reasoning_tokens": num_reasoning_tokens},
            total_tokens=num_prompt_tokens + num_output_tokens,
        ),
    )
