"""POST /v1/completions: parse, validate, tokenize, submit, format (JSON or SSE).

Each prompt is sampled n times; engine sequence i is prompt i // n, sample i % n, which is
also the choice index vLLM reports.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import anyio
import attrs

from engine.sampling_params import SamplingParams
from protocol import response_bodies
from protocol.admission import check_capacity
from protocol.converter import parse_body
from protocol.generation.engine_calls import FinishedChoice, generate_all, open_generation
from protocol.generation.logprobs import (
    completion_logprobs,
    merge_completion_logprobs,
    prompt_logprobs_json,
    with_first_prompt_token,
)
from protocol.generation.prompts import completion_prompts, count_prompts
from protocol.generation.sampling import (
    check_generation_request,
    choice_params,
    request_params,
    truncate_prompt,
    usage_flags,
)
from protocol.generation.structured_outputs import request_grammar
from protocol.http import HTTPError, Request, Response, StreamingResponse
from protocol.model_resolution import COMPLETIONS, resolve_model, server_state
from protocol.openai.completion_schemas import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from protocol.served_model import ServedModel

logger = logging.getLogger(__name__)


def _reject_unsupported(req: CompletionRequest) -> None:
    if req.suffix is not None:
        raise HTTPError(400, "suffix is not currently supported", "BadRequestError", "suffix")


class _Prepared(NamedTuple):
    req: CompletionRequest
    served: ServedModel
    prompt_ids: list[list[int]]
    prompts: list[tuple[list[int], SamplingParams]]  # n per prompt
    echo: list[str] | None  # per prompt


def prepare_completion(request: Request) -> _Prepared:
    """Everything before the engine: parse, validate, tokenize, compile the grammar. Its cost
    grows with the request, so it runs in a worker thread."""
    req = parse_body(request, CompletionRequest)
    served = resolve_model(request, req.model, COMPLETIONS)
    _reject_unsupported(req)
    settings = server_state(request).settings
    max_logprobs = settings.max_logprobs
    check_generation_request(
        req,
        served,
        num_prompts=count_prompts(req.prompt),
        max_tokens=req.max_tokens,
        max_tokens_param="max_tokens",
        logprobs=req.logprobs,
        settings=settings,
    )
    grammar = request_grammar(req, settings.max_grammar_chars)

    tokenizer = served.tokenizer
    prompt_ids, prompt_texts = completion_prompts(
        req.prompt,
        tokenizer,
        req.add_special_tokens,
        served.vocab_size,
        settings.prompt_chars(served.max_model_len),
    )
    prompt_ids = [
        truncate_prompt(ids, req.truncate_prompt_tokens, served.max_model_len) for ids in prompt_ids
    ]
    prompts: list[tuple[list[int], SamplingParams]] = []
    for ids in prompt_ids:
        params = request_params(
            req,
            served,
            len(ids),
            max_tokens=req.max_tokens,
            logprobs=req.logprobs,
            max_logprobs=max_logprobs,
            grammar=grammar,
        )
        if req.echo and req.logprobs is not None and params.prompt_logprobs is None:
            # Echo with logprobs lists the prompt tokens' logprobs before the output's.
            params = attrs.evolve(params, prompt_logprobs=req.logprobs)
        prompts.extend((ids, p) for p in choice_params(params, req.num_choices))

    echo: list[str] | None = None
    if req.echo:
        echo = [
            text if text is not None else tokenizer.decode(ids)
            for ids, text in zip(prompt_ids, prompt_texts, strict=True)
        ]
    return _Prepared(req, served, prompt_ids, prompts, echo)


async def create_completion(request: Request) -> Response | StreamingResponse:
    # Off the event loop: a large request never delays other clients' tokens.
    req, served, prompt_ids, prompts, echo = await anyio.to_thread.run_sync(
        prepare_completion, request
    )
    tokenizer = served.tokenizer
    response_id = response_bodies.completion_id(request, req.request_id)
    if req.stream:
        check_capacity(served, prompts)  # a real 429, before the stream's 200 goes out
        include_usage, continuous = usage_flags(req)
        chunks = _stream(
            served,
            response_id,
            served.name,
            prompts,
            req.num_choices,
            prompt_ids,
            echo,
            include_usage,
            continuous,
        )
        return StreamingResponse(chunks)

    created = response_bodies.created_now()
    finished = await generate_all(served, response_id, prompts)
    choices = [
        CompletionResponseChoice(
            index=i,
            text=(echo[i // req.num_choices] if echo else "") + choice.text,
            logprobs=_choice_logprobs(req, choice, prompt_ids[i // req.num_choices], tokenizer),
            finish_reason=choice.finish_reason,
            stop_reason=choice.stop_reason,
            token_ids=choice.token_ids if req.return_token_ids else None,
            prompt_logprobs=prompt_logprobs_json(choice.prompt_logprobs, tokenizer)
            if req.prompt_logprobs is not None
            else None,
            prompt_token_ids=prompt_ids[i // req.num_choices] if req.return_token_ids else None,
        )
        for i, choice in enumerate(finished)
    ]
    # Prompt tokens count once per prompt, however many samples were drawn from it.
    num_prompt_tokens = sum(len(ids) for ids in prompt_ids)
    num_output_tokens = sum(c.num_output_tokens for c in finished)
    # Samples of one prompt share its cache hits: count the first sample of each prompt.
    num_cached_tokens = sum(c.num_cached_tokens for c in finished[:: req.num_choices])
    return response_bodies.json_body(
        CompletionResponse(
            id=response_id,
            created=created,
            model=served.name,
            choices=choices,
            usage=response_bodies.usage(num_prompt_tokens, num_output_tokens, num_cached_tokens),
        )
    )


def _choice_logprobs(
    req: CompletionRequest, choice: FinishedChoice, prompt_ids: list[int], tokenizer: Any
) -> dict[str, Any] | None:
    if req.logprobs is None:
        return None
    output = completion_logprobs(choice.logprobs, tokenizer)
    if not req.echo or choice.prompt_logprobs is None:
        return output
    echoed = with_first_prompt_token(prompt_ids, choice.prompt_logprobs, tokenizer)
    return merge_completion_logprobs(echoed, output)


async def _stream(
    served: ServedModel,
    response_id: str,
    model: str,
    prompts: list[tuple[list[int], SamplingParams]],
    n: int,
    prompt_ids: list[list[int]],
    echo: list[str] | None,
    include_usage: bool,
    continuous: bool,
) -> AsyncIterator[bytes]:
    created = response_bodies.created_now()
    num_output_tokens = [0] * len(prompts)
    num_cached_tokens = [0] * len(prompts)
    echoed = [False] * len(prompts)
    want_logprobs = prompts[0][1].logprobs is not None
    # Logprobs of tokens whose text is not out yet wait for the next chunk; offsets run on.
    pending: list[list[Any]] = [[] for _ in prompts]
    text_offsets = [0] * len(prompts)
    tokenizer = served.tokenizer
    try:
        async with open_generation(served, response_id, prompts) as outputs:
            async for index, output in outputs:
                text = output.new_text
                if echo is not None and not echoed[index]:
                    text = echo[index // n] + text
                    echoed[index] = True
                    if want_logprobs and output.prompt_logprobs is not None:
                        pending[index].append(
                            with_first_prompt_token(
                                prompt_ids[index // n], output.prompt_logprobs, tokenizer
                            )
                        )
                if want_logprobs and output.logprobs:
                    pending[index].append(completion_logprobs(output.logprobs, tokenizer))
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
                    chunk_usage = response_bodies.usage(
                        len(prompt_ids[index // n]),
                        num_output_tokens[index],
                        num_cached_tokens[index],
                    )
                chunk_logprobs = None
                if want_logprobs:
                    chunk_logprobs = _join_logprobs(pending[index], text_offsets[index])
                    pending[index] = []
                    if chunk_logprobs["tokens"]:
                        last = chunk_logprobs["text_offset"][-1]
                        text_offsets[index] = last + len(chunk_logprobs["tokens"][-1])
                yield response_bodies.sse_event(
                    CompletionStreamResponse(
                        id=response_id,
                        created=created,
                        model=model,
                        choices=[
                            CompletionResponseStreamChoice(
                                index=index,
                                text=text,
                                logprobs=chunk_logprobs,
                                finish_reason=finish_reason,
                                stop_reason=output.stop_reason if finish_reason else None,
                            )
                        ],
                        usage=chunk_usage,
                    )
                )
        if include_usage:
            yield response_bodies.sse_event(
                CompletionStreamResponse(
                    id=response_id,
                    created=created,
                    model=model,
                    choices=[],
                    usage=response_bodies.usage(
                        sum(len(ids) for ids in prompt_ids),
                        sum(num_output_tokens),
                        sum(num_cached_tokens[::n]),
                    ),
                )
            )
    except Exception as exc:
        logger.exception("completion stream %s failed", response_id)
        yield response_bodies.sse_error_event(exc)
    yield response_bodies.SSE_DONE


def _join_logprobs(parts: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """One chunk's logprobs from the pieces gathered since the last chunk, with text offsets
    continuing from `offset`."""
    joined: dict[str, Any] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    for part in parts:
        joined = merge_completion_logprobs(joined, part)  # a new dict: parts stay as they are
    joined["text_offset"] = [o + offset for o in joined["text_offset"]]
    return joined
