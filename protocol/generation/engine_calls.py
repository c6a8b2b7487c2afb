"""How handlers drive `engine.generate`: the output iterator is always closed, even on cancel.

Closing the iterator is what aborts sequences still running in the engine (freeing their KV
blocks) when a client disconnects, a stream is abandoned or the handler fails part way. The
request's log line (observability/request_log.py) counts its tokens here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import attrs

from engine.outputs import RequestOutput, TokenLogprobs
from engine.sampling_params import SamplingParams
from observability.request_log import current_record
from protocol.http import HTTPError
from protocol.served_model import ServedModel

Outputs = AsyncIterator[tuple[int, RequestOutput]]


@contextlib.asynccontextmanager
async def open_generation(
    served: ServedModel, request_id: str, prompts: list[tuple[list[int], SamplingParams]]
) -> AsyncIterator[Outputs]:
    outputs = served.engine.generate(request_id, prompts)
    try:
        yield _counted(outputs, prompts)
    finally:
        aclose = getattr(outputs, "aclose", None)
        if aclose is not None:
            # On disconnect this runs inside a cancelled scope; without the shield the abort
            # itself would be cancelled at its first await and the sequences would leak.
            with anyio.CancelScope(shield=True):
                await aclose()


async def _counted(outputs: Outputs, prompts: list[tuple[list[int], SamplingParams]]) -> Outputs:
    """The outputs, noting their tokens on the request's log line when there is one."""
    record = current_record()
    if record is None:
        async for item in outputs:
            yield item
        return
    started = False
    async for item in outputs:
        if not started:  # admitted: once per prompt, however many samples, as usage counts
            record.note_prompt_tokens(
                sum(len(ids) for i, (ids, params) in enumerate(prompts) if i % params.n == 0)
            )
            started = True
        record.note_generation_tokens(len(item[1].new_token_ids))
        yield item


async def _refusals_as_400(outputs: Outputs) -> Outputs:
    """An input the engine refuses (ValueError) is the client's mistake: a 400."""
    try:
        async for item in outputs:
            yield item
    except ValueError as exc:
        raise HTTPError(400, str(exc), "BadRequestError") from None


@attrs.define
class FinishedChoice:
    """What a non-streaming response needs from one engine sequence."""

    text: str = ""
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    # Stays "abort" only if the engine ended without finishing this sequence.
    finish_reason: str = "abort"
    stop_reason: str | int | None = None
    token_ids: list[int] = attrs.field(factory=list)
    logprobs: list[TokenLogprobs] = attrs.field(factory=list)  # when the request asked
    prompt_logprobs: list[TokenLogprobs | None] | None = None


async def generate_all(
    served: ServedModel, request_id: str, prompts: list[tuple[list[int], SamplingParams]]
) -> list[FinishedChoice]:
    pieces: list[list[str]] = [[] for _ in prompts]
    choices = [FinishedChoice() for _ in prompts]
    async with open_generation(served, request_id, prompts) as outputs:
        async for index, output in _refusals_as_400(outputs):
            pieces[index].append(output.new_text)
            choice = choices[index]
            choice.num_output_tokens = output.num_output_tokens
            choice.num_cached_tokens = output.num_cached_tokens
            choice.token_ids += output.new_token_ids
            if output.logprobs:
                choice.logprobs += output.logprobs
            if output.prompt_logprobs is not None:
                choice.prompt_logprobs = output.prompt_logprobs
            if output.finished:
                choice.finish_reason = output.finish_reason or "stop"
                choice.stop_reason = output.stop_reason
    for choice, parts in zip(choices, pieces, strict=True):
        choice.text = "".join(parts)
    return choices
