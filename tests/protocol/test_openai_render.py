"""The render routes: what a chat or completion request would submit, nothing generated."""

from __future__ import annotations

import orjson
import pytest
from protocol_fakes import BOS, ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}


async def test_chat_render_gives_the_token_ids_and_sampling_params_without_generating() -> None:
    engine = ScriptedEngine(max_model_len=512)
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 7,
        "temperature": 0.5,
        "stop": ["\n"],
        "n": 2,
        "seed": 3,
        "logit_bias": {"65": 2},
        "request_id": "r1",
    }
    request = make_request(body, server=server_with(engine))
    rendered = orjson.loads((await HANDLERS["/v1/chat/completions/render"](request)).body)
    assert engine.calls == []  # nothing generated
    chat = await HANDLERS["/tokenize"](
        make_request({"messages": body["messages"]}, server=server_with(engine))
    )
    assert rendered["token_ids"] == orjson.loads(chat.body)["tokens"]
    assert rendered["request_id"] == "chatcmpl-r1" and rendered["model"] == "test-model"
    params = rendered["sampling_params"]
    assert (params["max_tokens"], params["temperature"], params["n"], params["seed"]) == (
        7,
        0.5,
        2,
        3,
    )
    assert params["stop"] == ["\n"] and params["logit_bias"] == {"65": 2.0}
    assert "grammar" not in params and rendered["stream"] is False


async def test_completion_render_gives_one_request_per_prompt() -> None:
    engine = ScriptedEngine(max_model_len=512)
    body = {"prompt": ["ab", "c"], "max_tokens": 3, "guided_choice": ["x", "y"]}
    request = make_request(body, server=server_with(engine))
    rendered = orjson.loads((await HANDLERS["/v1/completions/render"](request)).body)
    assert [r["token_ids"] for r in rendered] == [[BOS, ord("a"), ord("b")], [BOS, ord("c")]]
    assert [r["request_id"] for r in rendered] == ["cmpl-req-1-0", "cmpl-req-1-1"]
    assert "grammar" in rendered[0]["sampling_params"]["structured_outputs"]
    assert engine.calls == []


async def test_a_request_that_would_be_refused_is_refused_by_render_too() -> None:
    engine = ScriptedEngine(max_model_len=16)
    body = {"prompt": "x" * 40, "max_tokens": 2}
    with pytest.raises(HTTPError) as info:
        await HANDLERS["/v1/completions/render"](make_request(body, server=server_with(engine)))
    assert info.value.status == 400 and "maximum context length" in info.value.message
