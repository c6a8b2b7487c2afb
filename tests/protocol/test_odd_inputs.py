"""Odd bytes and numbers from a client are OpenAI-shaped 400s, never a 500."""

from __future__ import annotations

import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {route.path: route.handler for route in build_routes()}
CHAT_MESSAGES = b'"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", b'{"prompt": "\xff\xfe", "max_tokens": 2}', None),  # not UTF-8
        ("/tokenize", b'{"prompt": "\xc3\x28"}', None),
        ("/v1/completions", b'{"prompt": "hi", "max_tokens": 1' + b"0" * 400 + b"}", None),
        ("/v1/completions", b'{"prompt": "hi", "temperature": 1e400}', None),
        ("/v1/completions", b'{"prompt": "hi", "seed": 99999999999999999999999}', "seed"),
        ("/v1/completions", b'{"prompt": [99999999999999999999999]}', "prompt"),
        ("/v1/chat/completions", b"{" + CHAT_MESSAGES + b', "n": 1' + b"0" * 30 + b"}", "n"),
    ],
)
async def test_odd_bytes_and_numbers_are_400s(path: str, body: bytes, param: str | None) -> None:
    engine = ScriptedEngine()
    with pytest.raises(HTTPError) as info:
        await HANDLERS[path](make_request(body, server=server_with(engine)))
    assert (info.value.status, info.value.err_type) == (400, "BadRequestError")
    if param is not None:
        assert info.value.param == param
    assert engine.calls == []
