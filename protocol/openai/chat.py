"""POST /v1/chat/completions: parse, validate, render the chat template, submit, format.

The n choices are n engine sequences of the same prompt; choice i is sequence i.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import anyio
import attrs

from configs.settings import Settings
from engine.sampling_params import SamplingParams
from protocol import response_bodies
from protocol.admission import check_capacity
from protocol.converter import parse_body
from protocol.generation.chat_template import message_text, render_request
from protocol.generation.engine_calls import FinishedChoice, generate_all, open_generation
from protocol.generation.logprobs import chat_logprobs, prompt_logprobs_json
from protocol.generation.prompts import check_token_ids, encode
from protocol.generation.reasoning_parsers import (
    NOT_SPLIT,
    Reasoning,
    ThinkingParser,
    split_piece,
    split_reasoning,
    thinking_end_token,
    thinking_on,
)
from protocol.generation.sampling import (
    check_generation_request,
    choice_params,
    request_params,
    truncate_prompt,
    usage_flags,
)
from protocol.generation.structured_outputs import request_grammar
from protocol.generation.tool_choice import ToolPlan, tool_plan
from protocol.generation.tool_parsers import ParsedDelta, ToolParser
from protocol.http import HTTPError, Request, Response, StreamingResponse
from protocol.model_resolution import CHAT, resolve_model, server_state
from protocol.openai.chat_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaMessage,
)
from protocol.served_model import ServedModel

logger = logging.getLogger(__name__)


def response_role(req: ChatCompletionRequest) -> str:
    # vLLM: without a generation prompt the model continues the last message's role.
    if req.add_generation_prompt or not req.messages:
        return "assistant"
    return req.messages[-1].role


class PreparedChat(NamedTuple):
    req: ChatCompletionRequest
    served: ServedModel
    prompt_ids: list[int]
    prompts: list[tuple[list[int], SamplingParams]]  # one per choice
    plan: ToolPlan
    logprobs: int | None
    # Whether replies start inside a thinking block (None: the model's replies are not split).
    thinking: bool | None = None


def prepare_chat(request: Request) -> PreparedChat:
    """Everything before the engine: parse, validate, render the template, tokenize, compile
    the grammar. Its cost grows with the request, so it runs in a worker thread."""
    req = parse_body(request, ChatCompletionRequest)
    served = resolve_model(request, req.model, CHAT)
    settings = server_state(request).settings
    limits = check_chat_request(req, served, settings, num_conversations=1)
    return prepare_conversation(req, served, settings, limits)


class _OutputLimits(NamedTuple):
    max_tokens: int | None  # as the client asked (None: up to the context length)
    logprobs: int | None


def check_chat_request(
    req: ChatCompletionRequest, served: ServedModel, settings: Settings, num_conversations: int
) -> _OutputLimits:
    """What a chat request can be refused for before any conversation is rendered."""
    logprobs = _requested_logprobs(req)
    if req.max_completion_tokens is not None:
        requested, requested_param = req.max_completion_tokens, "max_completion_tokens"
    else:
        requested, requested_param = req.max_tokens, "max_tokens"
    check_generation_request(
        req,
        served,
        num_prompts=num_conversations,
        max_tokens=requested,
        max_tokens_param=requested_param,
        logprobs=logprobs,
        settings=settings,
    )
    return _OutputLimits(requested, logprobs)


def prepare_conversation(
    req: ChatCompletionRequest, served: ServedModel, settings: Settings, limits: _OutputLimits
) -> PreparedChat:
    """One conversation's prompt and sampling parameters (one pair per choice)."""
    plan = tool_plan(req, served.tool_call_parser, settings.max_grammar_chars)
    # A forced tool choice replaces the request's own output constraint.
    grammar = plan.grammar or request_grammar(req, settings.max_grammar_chars)

    prompt_text = render_request(req, served, settings)
    prompt_ids = encode(
        served.tokenizer,
        prompt_text,
        req.add_special_tokens,
        settings.prompt_chars(served.max_model_len),
        "messages",
    )
    if not prompt_ids:
        raise HTTPError(400, "The decoder prompt cannot be empty", "BadRequestError", "messages")
    check_token_ids(prompt_ids, served.vocab_size, "messages")
    prompt_ids = truncate_prompt(prompt_ids, req.truncate_prompt_tokens, served.max_model_len)
    params = request_params(
        req,
        served,
        len(prompt_ids),
        max_tokens=limits.max_tokens,
        logprobs=limits.logprobs,
        max_logprobs=settings.max_logprobs,
        grammar=grammar,
    )
    if plan.mode == "auto":
        # Tool-call tags are special tokens in some vocabularies; the parser must see them.
        params = attrs.evolve(params, skip_special_tokens=False)
    prompts = [(prompt_ids, p) for p in choice_params(params, req.num_choices)]
    thinking = None
    if served.reasoning_parser is not None:
        kwargs = req.chat_template_kwargs or {}
        thinking = thinking_on(served.reasoning_parser, prompt_text, kwargs)
        end = thinking_end_token(served.tokenizer) if thinking and grammar is not None else None
        if end is not None:  # the constraint is the answer's: it starts after the thinking
            prompts = [(ids, attrs.evolve(p, grammar_after_token_id=end)) for ids, p in prompts]
    return PreparedChat(req, served, prompt_ids, prompts, plan, limits.logprobs, thinking)


async def create_chat_completion(request: Request) -> Response | StreamingResponse:
    # Off the event loop: a large request never delays other clients' tokens.
    prepared = await anyio.to_thread.run_sync(prepare_chat, request)
    req, served, prompt_ids, prompts, plan, logprobs, thinking = prepared
    shown = Reasoning(thinking, req.include_reasoning)
    response_id = response_bodies.chat_completion_id(request, req.request_id)
    role = response_role(req)
    echo = echo_text(req, role)
    if req.stream:
        check_capacity(served, prompts)  # a real 429, before the stream's 200 goes out
        include_usage, continuous = usage_flags(req)
        chunks = _stream(
            served,
            response_id,
            served.name,
            prompts,
            role,
            echo,
            plan,
            shown,
            include_usage,
            continuous,
        )
        return StreamingResponse(chunks)

    created = response_bodies.created_now()
    finished = await generate_all(served, response_id, prompts)
    choices = [
        reply_choice(i, choice, role, echo, plan, logprobs, served, req.return_token_ids, shown)
        for i, choice in enumerate(finished)
    ]
    num_output_tokens = sum(c.num_output_tokens for c in finished)
    return response_bodies.json_body(
        ChatCompletionResponse(
            id=response_id,
            created=created,
            model=served.name,
            choices=choices,
            usage=response_bodies.usage(
                len(prompt_ids), num_output_tokens, finished[0].num_cached_tokens
            ),
            prompt_logprobs=prompt_logprobs_json(finished[0].prompt_logprobs, served.tokenizer),
            prompt_token_ids=prompt_ids if req.return_token_ids else None,
        )
    )


def reply_choice(
    index: int,
    choice: FinishedChoice,
    role: str,
    echo: str | None,
    plan: ToolPlan,
    logprobs: int | None,
    served: ServedModel,
    return_token_ids: bool,
    reasoning: Reasoning = NOT_SPLIT,
) -> ChatCompletionResponseChoice:
    """One finished sequence as a response choice: thinking and tool calls parsed out, echo
    prepended."""
    message, called = _message(role, choice.text, plan, reasoning)
    choice_logprobs = None
    if logprobs is not None:
        choice_logprobs = chat_logprobs(choice.logprobs, served.tokenizer)
    if echo is not None:
        message = attrs.evolve(message, content=echo + (message.content or ""))
    return ChatCompletionResponseChoice(
        index=index,
        message=message,
        logprobs=choice_logprobs,
        finish_reason=_finish_reason(choice.finish_reason, plan, called),
        stop_reason=choice.stop_reason,
        token_ids=choice.token_ids if return_token_ids else None,
    )


def echo_text(req: ChatCompletionRequest, role: str) -> str | None:
    """With `echo`, the last message's text when it has the reply's role (vLLM's rule)."""
    if not req.echo or not req.messages or req.messages[-1].role != role:
        return None
    return message_text(req.messages[-1])


def _message(
    role: str, text: str, plan: ToolPlan, reasoning: Reasoning
) -> tuple[ChatMessage, bool]:
    """The reply, with the thinking and the tool calls in `text` parsed out; and whether there
    were any calls."""
    thoughts: str | None = None
    if reasoning.thinking is not None:
        thoughts, text = split_reasoning(ThinkingParser(reasoning.thinking), text)
        thoughts = thoughts if reasoning.shown else None
    parser = plan.parser()
    if parser is None:
        content = text if reasoning.thinking is None else text or None
        return ChatMessage(role=role, content=content, reasoning=thoughts), False
    parser.feed(text)
    parser.finish()
    content, calls = parser.result()
    if plan.mode in ("required", "named"):
        content = ""  # vLLM and OpenAI: a forced call has empty content, not null
    message = ChatMessage(role=role, content=content, tool_calls=calls, reasoning=thoughts)
    return message, bool(calls)


def _finish_reason(engine_reason: str, plan: ToolPlan, called: bool) -> str:
    """ "tool_calls" when the model stopped after calling tools on its own ("auto") or as it was
    told to ("required"). A named call finishes with "stop", as at OpenAI; a call cut short by
    max_tokens with "length"."""
    if called and engine_reason == "stop" and plan.mode in ("auto", "required"):
        return "tool_calls"
    return engine_reason


def reply_piece(
    thinker: ThinkingParser | None, parser: ToolParser | None, text: str, last: bool
) -> tuple[str, ParsedDelta]:
    """One streamed piece of a reply: its thinking, and its answer with tool calls parsed out."""
    thoughts = ""
    if thinker is not None:
        thoughts, text = split_piece(thinker, text, last)
    if parser is None:
        return thoughts, ParsedDelta(content=text)
    return thoughts, parse_piece(parser, text, last)


def parse_piece(parser: ToolParser, text: str, last: bool) -> ParsedDelta:
    parsed = parser.feed(text) if text else ParsedDelta()
    if last:
        rest = parser.finish()
        parsed = ParsedDelta(parsed.content + rest.content, parsed.tool_calls + rest.tool_calls)
    return parsed


def _requested_logprobs(req: ChatCompletionRequest) -> int | None:
    """How many alternatives per token the client wants (None: no logprobs at all)."""
    if req.top_logprobs is not None and not req.logprobs:
        raise HTTPError(
            400,
            "when using `top_logprobs`, `logprobs` must be set to true.",
            "BadRequestError",
            "top_logprobs",
        )
    if not req.logprobs:
        return None
    return req.top_logprobs or 0


async def _stream(
    served: ServedModel,
    response_id: str,
    model: str,
    prompts: list[tuple[list[int], SamplingParams]],
    role: str,
    echo: str | None,
    plan: ToolPlan,
    reasoning: Reasoning,
    include_usage: bool,
    continuous: bool,
) -> AsyncIterator[bytes]:
    created = response_bodies.created_now()
    num_prompt_tokens = len(prompts[0][0])
    num_output_tokens = [0] * len(prompts)
    num_cached_tokens = 0  # every choice shares the prompt; the first one's count stands
    role_sent = False
    want_logprobs = prompts[0][1].logprobs is not None
    # Logprobs of tokens whose text is held back (stop strings, partial characters) wait for
    # the chunk that carries it.
    pending: list[list[Any]] = [[] for _ in prompts]
    parsers = [plan.parser() for _ in prompts]
    thinkers = [reasoning.parser() for _ in prompts]

    def chunk(
        index: int,
        delta: DeltaMessage,
        finish_reason: str | None = None,
        stop_reason: str | int | None = None,
    ) -> bytes:
        logprobs = None
        if want_logprobs and delta.role is None:
            logprobs = chat_logprobs(pending[index], served.tokenizer)
            pending[index] = []
        chunk_usage = None
        if continuous:
            chunk_usage = response_bodies.usage(
                num_prompt_tokens, num_output_tokens[index], num_cached_tokens
            )
        choice = ChatCompletionResponseStreamChoice(
            index=index,
            delta=delta,
            logprobs=logprobs,
            finish_reason=finish_reason,
            stop_reason=stop_reason,
        )
        return response_bodies.sse_event(
            ChatCompletionStreamResponse(
                id=response_id, created=created, model=model, choices=[choice], usage=chunk_usage
            )
        )

    try:
        async with open_generation(served, response_id, prompts) as outputs:
            async for index, output in outputs:
                # Like vLLM, the role chunks wait for the first output, so an engine that fails
                # at once reports the error as the stream's first event.
                if not role_sent:
                    for i in range(len(prompts)):
                        yield chunk(i, DeltaMessage(role=role, content=""))
                        if echo:
                            yield chunk(i, DeltaMessage(content=echo))
                    role_sent = True
                num_output_tokens[index] = output.num_output_tokens
                if index == 0:
                    num_cached_tokens = output.num_cached_tokens
                if want_logprobs and output.logprobs:
                    pending[index] += output.logprobs
                parser = parsers[index]
                thoughts, parsed = reply_piece(
                    thinkers[index], parser, output.new_text, output.finished
                )
                delta = DeltaMessage(
                    content=parsed.content or None,
                    reasoning=thoughts if thoughts and reasoning.shown else None,
                    tool_calls=parsed.tool_calls or None,
                )
                if output.finished:
                    called = parser is not None and parser.called
                    finish_reason = _finish_reason(output.finish_reason or "stop", plan, called)
                    yield chunk(index, delta, finish_reason, output.stop_reason)
                elif delta != DeltaMessage():
                    yield chunk(index, delta)
        if include_usage:
            yield response_bodies.sse_event(
                ChatCompletionStreamResponse(
                    id=response_id,
                    created=created,
                    model=model,
                    choices=[],
                    usage=response_bodies.usage(
                        num_prompt_tokens, sum(num_output_tokens), num_cached_tokens
                    ),
                )
            )
    except Exception as exc:
        logger.exception("chat completion stream %s failed", response_id)
        yield response_bodies.sse_error_event(exc)
    yield response_bodies.SSE_DONE
