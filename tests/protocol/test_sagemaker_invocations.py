"""POST /invocations: each body goes to the first API whose request it fits."""

from __future__ import annotations

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.routes import build_routes
from protocol.sagemaker.invocations import choose_invocation
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}


def _embedding_engine(name: str = "embedder") -> ScriptedEngine:
    engine = ScriptedEngine(name=name)
    engine.task = "embed"
    return engine


async def _invoke(body: dict, server: ServerState) -> dict:
    return orjson.loads((await HANDLERS["/invocations"](make_request(body, server=server))).body)


async def test_a_chat_body_is_a_chat_completion_and_a_prompt_body_a_completion() -> None:
    engine = ScriptedEngine(max_model_len=512, reply=lambda i: "hello")
    server = server_with(engine)
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    answer = await _invoke(chat, server)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "hel"
    answer = await _invoke({"prompt": "Hi", "max_tokens": 2}, server)
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == "he"


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ({"input": "a text"}, "create_embedding"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "embedder"}, "create_embedding"),
        ({"text_1": "a", "text_2": "b"}, "create_score"),
        ({"queries": ["a"], "documents": ["b"]}, "create_score"),
        ({"query": "a", "documents": ["b", "c"]}, "create_rerank"),
    ],
)
def test_pooling_bodies_go_to_the_pooling_routes(body: dict, route: str) -> None:
    server = server_with(ScriptedEngine(), _embedding_engine())
    assert choose_invocation(make_request(body, server=server)).handler.__name__ == route


def test_only_the_apis_a_served_model_answers_are_tried() -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    generator = server_with(ScriptedEngine())
    assert choose_invocation(make_request(body, server=generator)).handler.__name__ == (
        "create_chat_completion"
    )
    embedder = server_with(_embedding_engine())
    assert choose_invocation(make_request(body, server=embedder)).handler.__name__ == (
        "create_embedding"
    )


@pytest.mark.parametrize(
    "body",
    [{}, {"unknown": 1}, {"messages": "not a list"}, {"prompt": 5.5}, {"query": "only"}],
)
async def test_a_body_that_fits_nothing_is_a_400_listing_what_was_expected(body: dict) -> None:
    engine = ScriptedEngine()
    with pytest.raises(HTTPError) as info:
        await HANDLERS["/invocations"](make_request(body, server=server_with(engine)))
    assert info.value.status == 400
    assert info.value.message == (
        "Cannot find suitable handler for request. Expected one of: "
        "['ChatCompletionRequest', 'CompletionRequest']"
    )
    assert engine.calls == []


async def test_a_body_that_fits_but_is_invalid_gets_that_routes_own_400() -> None:
    engine = ScriptedEngine(max_model_len=16)
    body = {"prompt": "x" * 40, "max_tokens": 2}
    with pytest.raises(HTTPError) as info:
        await HANDLERS["/invocations"](make_request(body, server=server_with(engine)))
    assert info.value.status == 400 and "maximum context length" in info.value.message
