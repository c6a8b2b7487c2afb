"""The sleep mode routes: off unless enabled, the level checked, requests refused with a 503
while the models sleep and served again once they wake."""

from __future__ import annotations

import orjson
import pytest
from protocol_fakes import ScriptedEngine, make_request, server_with

from configs.settings import Settings
from protocol.http import HTTPError
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio
HANDLERS = {(route.method, route.path): route.handler for route in build_routes()}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


async def _call(server, method: str, path: str, query: bytes = b"", body=None) -> dict:
    request = make_request(body, server=server, method=method, query_string=query)
    return orjson.loads((await HANDLERS[method, path](request)).body)


async def test_off_unless_enabled() -> None:
    server = server_with(ScriptedEngine())
    for method, path in (("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping")):
        with pytest.raises(HTTPError) as info:
            await _call(server, method, path)
        assert info.value.status == 404


async def test_asleep_requests_get_a_503_and_awake_they_are_served() -> None:
    engine = ScriptedEngine(max_model_len=512)
    server = server_with(engine, settings=Settings(enable_sleep_mode=True))
    assert await _call(server, "GET", "/is_sleeping") == {"is_sleeping": False, "level": 0}
    slept = await _call(server, "POST", "/sleep", b"level=2")
    assert slept == {"is_sleeping": True, "level": 2}
    assert await _call(server, "GET", "/is_sleeping") == {"is_sleeping": True, "level": 2}
    with pytest.raises(HTTPError) as info:
        await _call(server, "POST", "/v1/chat/completions", body=CHAT)
    assert info.value.status == 503 and "asleep" in info.value.message
    assert engine.calls == []
    assert await _call(server, "POST", "/wake_up") == {"is_sleeping": False, "level": 0}
    answer = await _call(server, "POST", "/v1/chat/completions", body=CHAT)
    assert answer["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize("level", [b"level=0", b"level=3", b"level=one"])
async def test_the_level_is_1_or_2(level: bytes) -> None:
    server = server_with(ScriptedEngine(), settings=Settings(enable_sleep_mode=True))
    with pytest.raises(HTTPError) as info:
        await _call(server, "POST", "/sleep", level)
    assert info.value.status == 400 and info.value.param == "level"
