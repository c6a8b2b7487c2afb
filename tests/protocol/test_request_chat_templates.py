"""A chat template sent with a request: refused unless the server trusts them (vLLM's
--trust-request-chat-template), and even then rendered under a time, size and memory limit."""

from __future__ import annotations

import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from configs.settings import Settings
from protocol.generation import chat_template
from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
USER_HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/tokenize"])
@pytest.mark.parametrize(
    "fields",
    [{"chat_template": "{{ 'mine' }}"}, {"chat_template_kwargs": {"chat_template": "{{ 1 }}"}}],
)
async def test_a_request_template_is_refused_by_default(path: str, fields: dict) -> None:
    engine = ScriptedEngine()
    request = make_request(
        {"messages": USER_HI, **fields}, server=server_with(engine, settings=Settings())
    )
    with pytest.raises(HTTPError) as info:
        await HANDLERS[path](request)
    assert info.value.status == 400 and info.value.err_type == "BadRequestError"
    assert info.value.message == chat_template.UNTRUSTED_TEMPLATE_MESSAGE
    assert engine.calls == []


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "longer than",
        ),
        ("{{ 'x' * 10**10 }}", "a value of 10000000000 items"),
        ("{{ 7 ** 100000000 }}", "number too large"),
        ("{% for i in range(100000) %}{{ 'abcdefghij' * 1000 }}{% endfor %}", "renders more"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}{{ ns.s }}",
            "memory",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
    ],
)
async def test_a_trusted_template_past_a_limit_is_a_400_and_the_next_request_is_served(
    template: str, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_template, "REQUEST_TEMPLATE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(chat_template, "REQUEST_TEMPLATE_MEMORY_BYTES", 64 << 20)
    engine = ScriptedEngine(max_model_len=1024)
    server = server_with(engine, settings=Settings(trust_request_chat_template=True))
    with pytest.raises(HTTPError) as info:
        await HANDLERS["/tokenize"](
            make_request({"messages": USER_HI, "chat_template": template}, server=server)
        )
    assert info.value.status == 400 and needle in info.value.message
    response = await HANDLERS["/tokenize"](
        make_request(
            {"messages": USER_HI, "chat_template": "{{ messages[0].content }}"}, server=server
        )
    )
    assert response.status == 200
