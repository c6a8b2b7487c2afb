"""Stand-ins for the protocol tests: a character tokenizer, a scripted engine, request helpers.

The engine implements only the duck-typed interface the handlers call (see protocol/), with
deterministic outputs, so tests can check response shapes and streaming chunk rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.lowlevel
import orjson

from configs.settings import Settings
from engine.admission import Admission
from engine.outputs import RequestOutput, TokenLogprobs
from engine.sampling_params import SamplingParams
from protocol.http import Request, StreamingResponse
from protocol.served_model import ServedModel
from protocol.server_state import ServerState

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

BOS, EOS = 1, 2


class CharTokenizer:
    """One token per character (its code point); BOS=1, EOS=2."""

    bos_token = "<s>"
    eos_token = "</s>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i not in (BOS, EOS))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        special = {BOS: self.bos_token, EOS: self.eos_token}
        return [special.get(i, chr(i)) for i in ids]


class ScriptedEngine:
    """Sequence i replies `reply(i)` one character per step, then EOS ("stop"), or stops at
    max_tokens ("length"). Outputs of all sequences interleave round-robin."""

    def __init__(
        self,
        *,
        name: str = "test-model",
        max_model_len: int = 64,
        vocab_size: int = 256,
        chat_template: str | None = CHATML,
        tool_call_parser: str | None = "hermes",
        reasoning_parser: str | None = None,
        reply: Callable[[int], str] = lambda i: f"ok{i}",
        fail_after: int | None = None,
        stop_reason: str | int | None = None,
        generation_defaults: dict[str, Any] | None = None,
    ) -> None:
        self.served_model_name = name
        self.task = "generate"
        self.model_path = f"/models/{name}"
        self.created = 1_700_000_000
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.tokenizer = CharTokenizer()
        self.chat_template = chat_template
        self.chat_template_content_format = "auto"
        self.tool_call_parser = tool_call_parser
        self.reasoning_parser = reasoning_parser
        self.generation_defaults = dict(generation_defaults or {})  # as AsyncEngine's
        self.admission = Admission(name)  # tests fill it to see the 429
        self.error: BaseException | None = None
        self.step_started: float | None = None
        self.reply = reply
        self.fail_after = fail_after
        self.stop_reason = stop_reason
        self.calls: list[tuple[str, list[tuple[list[int], SamplingParams]]]] = []
        self.closed = False
        self._sleep_level = 0

    @property
    def sleep_level(self) -> int:
        return self._sleep_level

    async def sleep(self, level: int) -> None:
        """As AsyncEngine's, without memory to free: refuses requests until wake_up()."""
        self.admission.asleep = True
        self._sleep_level = max(self._sleep_level, level)

    async def wake_up(self) -> None:
        self.admission.asleep = False
        self._sleep_level = 0

    async def generate(
        self, request_id: str, prompts: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        self.admission.check(len(prompts), sum(len(ids) for ids, _ in prompts))  # as engines do
        self.calls.append((request_id, prompts))
        positions = [0] * len(prompts)
        done = [False] * len(prompts)
        emitted = 0
        try:
            while not all(done):
                for i, (ids, params) in enumerate(prompts):
                    if done[i]:
                        continue
                    if self.fail_after is not None and emitted >= self.fail_after:
                        raise RuntimeError("engine exploded")
                    await anyio.lowlevel.checkpoint()
                    text = self.reply(i)
                    if positions[i] < len(text):
                        char = text[positions[i]]
                        positions[i] += 1
                        finished = positions[i] >= params.max_tokens
                        output = self._output(
                            request_id,
                            params,
                            ids,
                            [ord(char)],
                            char,
                            positions[i],
                            "length" if finished else None,
                        )
                    else:  # the script is over: EOS, which decodes to no text
                        positions[i] += 1
                        output = self._output(
                            request_id, params, ids, [EOS], "", positions[i], "stop"
                        )
                    done[i] = output.finished
                    emitted += 1
                    yield i, output
        finally:
            self.closed = True

    def _output(
        self,
        request_id: str,
        params: SamplingParams,
        ids: list[int],
        new_ids: list[int],
        text: str,
        num: int,
        finish_reason: str | None,
    ) -> RequestOutput:
        return RequestOutput(
            request_id=request_id,
            new_token_ids=new_ids,
            new_text=text,
            num_prompt_tokens=len(ids),
            num_output_tokens=num,
            finished=finish_reason is not None,
            finish_reason=finish_reason,
            stop_reason=self.stop_reason if finish_reason == "stop" else None,
            logprobs=None if params.logprobs is None else [_scored(new_ids[0], params)],
        )


def fake_logprob(token_id: int) -> float:
    """The fake engine's log-probability of every token, at every position."""
    return -token_id / 100


def _scored(token_id: int, params: SamplingParams) -> TokenLogprobs:
    named = tuple((t, fake_logprob(t)) for t in params.logprob_token_ids)
    return TokenLogprobs(token_id, fake_logprob(token_id), 1, (), named)


def served(engine: Any) -> ServedModel:
    """The served model around a fake engine: its template, parser and defaults are the
    fake's own constructor arguments, kept beside it for this."""
    return ServedModel(
        name=engine.served_model_name,
        engine=engine,
        model_path=f"/models/{engine.served_model_name}",
        chat_template=getattr(engine, "chat_template", None),
        chat_template_content_format=getattr(engine, "chat_template_content_format", "auto"),
        tool_call_parser=getattr(engine, "tool_call_parser", None),
        reasoning_parser=getattr(engine, "reasoning_parser", None),
        generation_defaults=getattr(engine, "generation_defaults", {}),
        created=1_700_000_000,
    )


def server_with(
    *engines: Any,
    status: str = "ready",
    error: str | None = None,
    settings: Settings | None = None,
) -> ServerState:
    """A server state serving `engines`. Its settings trust request chat templates unless
    given: many tests bring their own template."""
    return ServerState(
        settings=settings or Settings(trust_request_chat_template=True),
        models={e.served_model_name: served(e) for e in engines},
        status=status,
        error=error,
    )


def make_request(
    body: Any = None,
    *,
    server: ServerState | None = None,
    method: str = "POST",
    path: str = "/",
    content_type: str | None = "application/json",
    request_id: str = "req-1",
    query_string: bytes = b"",
    authorized: bool = True,
) -> Request:
    raw = body if isinstance(body, bytes) else (b"" if body is None else orjson.dumps(body))
    headers = {} if content_type is None else {"content-type": content_type}
    return Request(
        method=method,
        path=path,
        headers=headers,
        query_string=query_string,
        body=raw,
        state={"server": server if server is not None else server_with()},
        request_id=request_id,
        authorized=authorized,
    )


async def read_events(response: StreamingResponse, limit: int | None = None) -> list[Any]:
    """The stream's SSE events, decoded: JSON objects, and "[DONE]" as the string."""
    events: list[Any] = []
    async for chunk in response.chunks:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
        payload = chunk[len(b"data: ") : -2]
        events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
        if limit is not None and len(events) >= limit:
            break
    return events


async def read_typed_events(response: StreamingResponse) -> list[dict[str, Any]]:
    """A stream of `event: <type>` / `data: {"type": <type>, ...}` events (the Responses and
    Anthropic streams), decoded; each event's name is checked against its type."""
    events = []
    async for chunk in response.chunks:
        name, data = chunk.decode().removesuffix("\n\n").split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events
