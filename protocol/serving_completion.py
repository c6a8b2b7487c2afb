"""POST /v1/completions: parse, validate, tokenize, submit, format (JSON or SSE).

Each prompt is sampled n times; engine sequence i is prompt i // n, sample i % n, which is
also the choice index vLLM reports.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from asgi.http import HTTPError, Request, Response, StreamingResponse
from engine.sampling_params import SamplingParams
from protocol import formatting
from protocol.converter import parse_body
from protocol.generation import generate_all, open_generation
from protocol.model_resolution import COMPLETIONS, resolve_engine
from protocol.prompts import completion_prompts
from protocol.sampling import (
    check_max_tokens_limit,
    check_stream_options,
    choice_params,
    resolve_max_tokens,
    sampling_params,
    usage_flags,
)
from protocol.schemas_completion import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)

logger = logging.getLogger(__name__)


def _reject_unsupported(req: CompletionRequest) -> None:
    if req.suffix is not None:
        raise HTTPError(400, "suffix is not currently supported", "BadRequestError", "suffix")
    if req.logprobs is not None:
        raise HTTPError(400, "logprobs are not supported yet", "BadRequestError", "logprobs")


async def create_completion(request: Request) -> Response | StreamingResponse:
    req = parse_body(request, CompletionRequest)
    engine = resolve_engine(request, req.model, COMPLETIONS)
    _reject_unsupported(req)
    check_stream_options(req)
    check_max_tokens_limit(req.max_tokens, "max_tokens", engine.max_model_len)

    tokenizer = engine.tokenizer
    prompt_ids, prompt_texts = completion_prompts(
        req.prompt, tokenizer, req.add_special_tokens, engine.vocab_size
    )
    prompts: list[tuple[list[int], SamplingParams]] = []
    for ids in prompt_ids:
        max_tokens = resolve_max_tokens(req.max_tokens, len(ids), engine.max_model_len)
        params = sampling_params(req, max_tokens)
        prompts.extend((ids, p) for p in choice_params(params, req.num_choices))

    echo: list[str] | None = None
    if req.echo:
        echo = [
            text if text is not None else tokenizer.decode(ids)
            for ids, text in zip(prompt_ids, prompt_texts, strict=True)
        ]

    response_id = formatting.completion_id(request)
    if req.stream:
        include_usage, continuous = usage_flags(req)
        chunks = _stream(
            engine,
            response_id,
            engine.served_model_name,
            prompts,
            req.num_choices,
            prompt_ids,
            echo,
            include_usage,
            continuous,
        )
        return StreamingResponse(chunks)

    created = formatting.created_now()
    finished = await generate_all(engine, response_id, prompts)
    choices = [
        CompletionResponseChoice(
            index=i,
            text=(echo[i // req.num_choices] if echo else "") + choice.text,
            finish_reason=choice.finish_reason,
            stop_reason=choice.stop_reason,
        )
        for i, choice in enumerate(finished)
    ]
    # Prompt tokens count once per prompt, however many samples were drawn from it.
    num_prompt_tokens = sum(len(ids) for ids in prompt_ids)
    num_output_tokens = sum(c.num_output_tokens for c in finished)
    # Samples of one prompt share its cache hits: count the first sample of each prompt.
    num_cached_tokens = sum(c.num_cached_tokens for c in finished[:: req.num_choices])
    return formatting.json_body(
        CompletionResponse(
            id=response_id,
            created=created,
            model=engine.served_model_name,
            choices=choices,
            usage=formatting.usage(num_prompt_tokens, num_output_tokens, num_cached_tokens),
        )
    )


async def _stream(
    engine: Any,
    response_id: str,
    model: str,
    prompts: list[tuple[list[int], SamplingParams]],
    n: int,
    prompt_ids: list[list[int]],
    echo: list[str] | None,
    include_usage: bool,
    continuous: bool,
) -> AsyncIterator[bytes]:
    created = formatting.created_now()
    num_output_tokens = [0] * len(prompts)
    num_cached_tokens = [0] * len(prompts)
    echoed = [False] * len(prompts)
    try:
        async with open_generation(engine, response_id, prompts) as outputs:
            async for index, output in outputs:
                text = output.new_text
                if echo is not None and not echoed[index]:
                    text = echo[index // n] + text
                    echoed[index] = True
                num_output_tokens[index] = output.num_output_tokens
                num_cached_tokens[index] = output.num_cached_tokens
                finish_reason = output.finish_reason if output.finished else None
                if output.finished and finish_reason is None:
                    finish_reason = "stop"
                # Empty deltas (a token that decodes to no text yet) are not worth a chunk,
                # but the finishing one must be sent: it carries finish_reason.
                if not text and finish_reason is None:
                    continue
                chunk_usage = None
                if continuous:
                    chunk_usage = formatting.usage(
                        len(prompt_ids[index // n]),
                        num_output_tokens[index],
                        num_cached_tokens[index],
                    )
                yield formatting.sse_event(
                    CompletionStreamResponse(
                        id=response_id,
                        created=created,
                        model=model,
                        choices=[
                            CompletionResponseStreamChoice(
                                index=index,
                                text=text,
                                finish_reason=finish_reason,
                                stop_reason=output.stop_reason if finish_reason else None,
                            )
                        ],
                        usage=chunk_usage,
                    )
                )
        if include_usage:
            yield formatting.sse_event(
                CompletionStreamResponse(
                    id=response_id,
                    created=created,
                    model=model,
                    choices=[],
                    usage=formatting.usage(
                        sum(len(ids) for ids in prompt_ids),
                        sum(num_output_tokens),
                        sum(num_cached_tokens[::n]),
                    ),
                )
            )
    except Exception as exc:
        logger.exception("completion stream %s failed", response_id)
        yield formatting.sse_error_event(exc)
    yield formatting.SSE_DONE
