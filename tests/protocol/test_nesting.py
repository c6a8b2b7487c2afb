"""Input nested deeper than the parsers and encoders follow is a 400, not a 500."""

from __future__ import annotations

import json
import sys

import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.nesting import TOO_DEEP
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
CHAT = next(r.handler for r in build_routes() if r.path == "/v1/chat/completions")


def nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = {"a": leaf}
    return leaf


def deep_json_text(depth: int) -> str:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 1000)
    try:
        return json.dumps(nested(depth, 1))
    finally:
        sys.setrecursionlimit(limit)


async def refusal(body: dict) -> HTTPError:
    engine = ScriptedEngine()
    with pytest.raises(HTTPError) as info:
        # As a client sends it: JSON text (orjson, which builds test bodies, stops at 255 levels).
        await CHAT(make_request(json.dumps(body).encode(), server=server_with(engine)))
    assert engine.calls == []
    return info.value


async def test_a_json_schema_400_levels_deep_is_a_400() -> None:
    schema = nested(400, {"type": "object"})
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    err = await refusal(body)
    assert (err.status, err.message) == (400, TOO_DEEP)


async def test_tool_call_arguments_3000_levels_deep_are_a_400() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f"}}
    call["function"]["arguments"] = deep_json_text(3000)
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
    }
    err = await refusal(body)
    assert (err.status, err.message) == (400, TOO_DEEP)
