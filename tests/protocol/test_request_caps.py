"""What one request may ask of the engine is capped (configs/settings.py), each cap a 400 that
names its setting, before anything reaches the engine."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from configs.settings import Settings
from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
DEFAULTS = Settings()
CHAT = {"messages": [{"role": "user", "content": "x"}]}
DEEP_SCHEMA = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(9000)}}
WEATHER = {"type": "function", "function": {"name": "w", "parameters": DEEP_SCHEMA}}


@pytest.mark.parametrize(
    ("path", "fields", "param", "setting"),
    [
        ("/v1/completions", {"stop": ["s"] * 65}, "stop", "max_stop_strings"),
        (
            "/v1/chat/completions",
            {"stop_token_ids": [5] * 65},
            "stop_token_ids",
            "max_stop_strings",
        ),
        ("/v1/completions", {"bad_words": ["w"] * 65}, "bad_words", "max_stop_strings"),
        ("/v1/completions", {"stop": "s" * 1025}, "stop", "max_stop_string_chars"),
        ("/v1/chat/completions", {"bad_words": ["w" * 1025]}, "bad_words", "max_stop_string_chars"),
        ("/v1/completions", {"logit_bias": {str(i): 1 for i in range(70000)}}, "logit_bias", None),
        ("/v1/completions", {"allowed_token_ids": [1] * 70000}, "allowed_token_ids", None),
        ("/v1/completions", {"prompt": "x" * 32 * 4096 + "x"}, "prompt", "max_prompt_chars"),
        ("/v1/completions", {"prompt": ["ok", "x" * 32 * 4097]}, "prompt", "max_prompt_chars"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x" * 32 * 4096}]},
            "messages",
            "max_prompt_chars",
        ),
        ("/tokenize", {"prompt": "x" * 32 * 4097}, "prompt", "max_prompt_chars"),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {"schema": DEEP_SCHEMA}}},
            "response_format.json_schema",
            "max_grammar_chars",
        ),
        (
            "/v1/completions",
            {"structured_outputs": {"regex": "a" * 140000}},
            None,
            "max_grammar_chars",
        ),
        ("/v1/completions", {"guided_choice": ["c" * 1000] * 140}, None, "max_grammar_chars"),
        (
            "/v1/chat/completions",
            {"tools": [WEATHER], "tool_choice": "required"},
            "tool_choice",
            "max_grammar_chars",
        ),
    ],
)
async def test_oversized_asks_are_400s_naming_the_limit(
    path: str, fields: dict[str, Any], param: str | None, setting: str | None
) -> None:
    engine = ScriptedEngine(max_model_len=4096, vocab_size=65536)
    body = {**(CHAT if path == "/v1/chat/completions" else {"prompt": "x"}), **fields}
    with pytest.raises(HTTPError) as info:
        await HANDLERS[path](make_request(body, server=server_with(engine)))
    assert (info.value.status, info.value.err_type) == (400, "BadRequestError")
    if param is not None:
        assert info.value.param == param
    if setting is not None:
        assert f"({setting})" in info.value.message
    assert engine.calls == []


async def test_asks_at_the_limits_are_served() -> None:
    engine = ScriptedEngine(max_model_len=4096, vocab_size=65536)
    body = {
        "prompt": "x" * 100,
        "stop": ["s" * DEFAULTS.max_stop_string_chars] * DEFAULTS.max_stop_strings,
        "bad_words": ["w"] * DEFAULTS.max_stop_strings,
        "logit_bias": {str(i): 1 for i in range(65536)},
        "max_tokens": 2,
    }
    response = await HANDLERS["/v1/completions"](make_request(body, server=server_with(engine)))
    assert response.status == 200 and len(engine.calls) == 1
