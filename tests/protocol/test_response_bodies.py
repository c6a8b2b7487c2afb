from __future__ import annotations

import re

import orjson
import pytest
from protocol_fakes import make_request

from protocol import response_bodies
from protocol.http import HTTPError
from protocol.openai.chat_schemas import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)


def decode_event(event: bytes) -> object:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return orjson.loads(event[len(b"data: ") : -2])


def test_response_ids_use_the_request_id_as_base() -> None:
    request = make_request(request_id="abc")
    assert response_bodies.completion_id(request) == "cmpl-abc"
    assert response_bodies.chat_completion_id(request) == "chatcmpl-abc"


def test_random_uuid_is_16_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", response_bodies.random_uuid())


def test_usage_totals_prompt_and_completion() -> None:
    usage = response_bodies.usage(5, 3)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 3, 8)
    assert usage.prompt_tokens_details == {"cached_tokens": 0}


def test_usage_reports_cached_prompt_tokens() -> None:
    assert response_bodies.usage(40, 3, cached_tokens=32).prompt_tokens_details == {
        "cached_tokens": 32
    }


def test_sse_event_frames_one_json_object() -> None:
    event = response_bodies.sse_event(response_bodies.usage(1, 2))
    assert event == (
        b'data: {"prompt_tokens":1,"total_tokens":3,"completion_tokens":2,'
        b'"prompt_tokens_details":{"cached_tokens":0}}\n\n'
    )


def test_done_terminator() -> None:
    assert response_bodies.SSE_DONE == b"data: [DONE]\n\n"


def test_stream_chunks_omit_unset_usage_and_delta_fields() -> None:
    chunk = ChatCompletionStreamResponse(
        id="chatcmpl-x",
        created=1,
        model="m",
        choices=[ChatCompletionResponseStreamChoice(index=0, delta=DeltaMessage(content="hi"))],
    )
    assert decode_event(response_bodies.sse_event(chunk)) == {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"content": "hi"},
                "logprobs": None,
                "finish_reason": None,
                "stop_reason": None,
            }
        ],
    }
    with_usage = ChatCompletionStreamResponse(
        id="x", created=1, model="m", choices=[], usage=response_bodies.usage(1, 1)
    )
    assert decode_event(response_bodies.sse_event(with_usage))["usage"]["total_tokens"] == 2


@pytest.mark.parametrize(
    ("exc", "code", "err_type", "param"),
    [
        (HTTPError(400, "bad", "BadRequestError", "n"), 400, "BadRequestError", "n"),
        (ValueError("bad value"), 400, "BadRequestError", None),
        (RuntimeError("boom"), 500, "InternalServerError", None),
    ],
)
def test_in_band_error_event_has_openai_error_shape(
    exc: Exception, code: int, err_type: str, param: str | None
) -> None:
    body = decode_event(response_bodies.sse_error_event(exc))
    assert body == {"error": {"message": str(exc), "type": err_type, "param": param, "code": code}}


def test_json_body_serialises_schema_objects() -> None:
    response = response_bodies.json_body(response_bodies.usage(1, 1), status=201)
    assert response.status == 201 and response.media_type == "application/json"
    assert orjson.loads(response.body)["total_tokens"] == 2


def test_sse_events_stay_one_line_for_readers_that_split_on_unicode_line_breaks():
    # A model may write U+2028, U+2029 or U+0085; str.splitlines-based readers (httpx's
    # aiter_lines) would cut the event there if they were sent raw.
    text = "a\u2028b\u2029c\x85d\ne"
    event = response_bodies.sse_event({"content": text})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    line = event.decode()[len("data: ") : -2]
    assert line.splitlines() == [line]
    assert orjson.loads(line) == {"content": text}
    assert response_bodies.sse_error_event(ValueError(text)).decode().splitlines()[0].endswith("}")
