from __future__ import annotations

import logging

import pytest
from protocol_fakes import make_request

from protocol.converter import parse_body
from protocol.http import HTTPError
from protocol.openai.chat_schemas import ChatCompletionRequest, ChatContentPart
from protocol.openai.completion_schemas import CompletionRequest
from protocol.tokenize.schemas import DetokenizeRequest


def parse(body: object, cls: type = CompletionRequest, **kwargs: object) -> object:
    return parse_body(make_request(body, **kwargs), cls)


def parse_error(body: object, cls: type = CompletionRequest, **kwargs: object) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        parse(body, cls, **kwargs)
    assert info.value.status == 400
    assert info.value.err_type == "BadRequestError"
    return info.value


@pytest.mark.parametrize(
    "prompt",
    ["Hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]], []],
    ids=["string", "strings", "token-ids", "token-id-lists", "empty-list"],
)
def test_every_prompt_form_is_accepted_as_sent(prompt: object) -> None:
    req = parse({"prompt": prompt})
    assert req.prompt == prompt


@pytest.mark.parametrize("prompt", [5, [1, "a"], [[1], "a"], [-1], [[0, -2]], [True], {"a": 1}])
def test_malformed_prompt_is_rejected_at_its_path(prompt: object) -> None:
    err = parse_error({"prompt": prompt})
    assert "@ $.prompt" in err.message
    assert err.param == "prompt"


@pytest.mark.parametrize(
    ("prompt", "ids"), [([315.0, 2], [315, 2]), ([[7.0], [1, 2.0]], [[7], [1, 2]])]
)
def test_integral_floats_are_token_ids_like_any_integer_field(prompt: object, ids: object) -> None:
    # JSON Schema's "integer" includes 315.0, and so does every other integer field here.
    req = parse({"prompt": prompt})
    assert req.prompt == ids
    assert all(type(t) is int for t in (ids[0] if isinstance(ids[0], list) else ids))


@pytest.mark.parametrize("prompt", [[1.5], [[2, 0.5]], [-1.0]])
def test_fractional_or_negative_token_ids_are_refused(prompt: object) -> None:
    assert parse_error({"prompt": prompt}).param == "prompt"


def test_defaults_match_vllm() -> None:
    req = parse({"prompt": "x"})
    assert req.max_tokens == 16 and req.n == 1 and req.add_special_tokens is True
    chat = parse({"messages": []}, ChatCompletionRequest)
    assert chat.max_tokens is None and chat.add_generation_prompt is True
    assert chat.add_special_tokens is False


def test_null_n_means_one_choice() -> None:
    assert parse({"prompt": "x", "n": None}).num_choices == 1


def test_explicit_null_max_tokens_means_whatever_fits() -> None:
    assert parse({"prompt": "x", "max_tokens": None}).max_tokens is None


def test_unknown_keys_are_ignored_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="protocol.converter")
    req = parse({"prompt": "x", "best_of": 3, "logits_bias": {"1": 2}, "stream_options": None})
    assert req.prompt == "x"
    assert "best_of" in caplog.text and "logits_bias" in caplog.text


def test_stop_accepts_a_string_or_a_list_of_strings() -> None:
    assert parse({"stop": "\n"}).stop == "\n"
    assert parse({"stop": ["a", "b"]}).stop == ["a", "b"]
    assert parse_error({"stop": ["a", 3]}).param == "stop"


def test_chat_content_may_be_a_string_or_a_list_of_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
        ]
    }
    req = parse(body, ChatCompletionRequest)
    assert req.messages[0].content == "s"
    assert req.messages[1].content == [ChatContentPart("text", "a"), ChatContentPart("image_url")]
    assert req.messages[2].content is None and req.messages[2].tool_calls == [{"id": "t"}]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"prompt": "x", "max_tokens": "3"}, "max_tokens"),
        ({"prompt": "x", "max_tokens": True}, "max_tokens"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"prompt": "x", "stream_options": 3}, "stream_options"),
        ({"prompt": "x", "stop_token_ids": "12"}, "stop_token_ids"),
        ({"prompt": "x", "stop_token_ids": [1, "2"]}, "stop_token_ids[1]"),
        ({"prompt": "x", "model": 7}, "model"),
    ],
)
def test_wrong_types_name_the_json_path(body: dict, path: str) -> None:
    err = parse_error(body)
    assert f"@ $.{path}" in err.message
    assert err.param == path


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({}, "messages", "required field missing"),
        ({"messages": "hi"}, "messages", "expected an array"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "required field missing"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "content parts"),
        (
            {"messages": [{"role": "user", "content": [{"text": "a"}]}]},
            "messages[0].content[0].type",
            "required field missing",
        ),
        ({"messages": [], "chat_template_kwargs": [1]}, "chat_template_kwargs", "object"),
    ],
)
def test_nested_chat_errors_name_the_json_path(body: dict, path: str, words: str) -> None:
    err = parse_error(body, ChatCompletionRequest)
    assert f"@ $.{path}" in err.message and words in err.message
    assert err.param == path


def test_integral_floats_are_integers_like_pydantic() -> None:
    assert parse({"prompt": "x", "max_tokens": 5.0}).max_tokens == 5
    assert parse_error({"prompt": "x", "max_tokens": 5.5}).param == "max_tokens"


def test_detokenize_requires_a_list_of_integers() -> None:
    assert parse({"tokens": [1, 2]}, DetokenizeRequest).tokens == [1, 2]
    assert parse_error({"tokens": "12"}, DetokenizeRequest).param == "tokens"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_a_400(content_type: str | None) -> None:
    err = parse_error({"prompt": "x"}, content_type=content_type)
    assert err.message.startswith("Unsupported Content-Type")
    assert "expected application/json" in err.message


def test_content_type_parameters_and_case_are_accepted() -> None:
    assert parse({"prompt": "x"}, content_type="Application/JSON; charset=utf-8").prompt == "x"


@pytest.mark.parametrize("raw", [b"", b"{", b"{'prompt': 1}", b"nope"])
def test_malformed_json_is_a_clear_400(raw: bytes) -> None:
    assert parse_error(raw).message.startswith("Invalid JSON in request body")


@pytest.mark.parametrize(("raw", "kind"), [(b"[1]", "array"), (b'"x"', "str"), (b"3", "int")])
def test_json_that_is_not_an_object_is_a_400(raw: bytes, kind: str) -> None:
    assert parse_error(raw).message == f"Request body must be a JSON object, got {kind}"
