from __future__ import annotations

import orjson
import pytest
from protocol_fakes import BOS, CHATML, ScriptedEngine, make_request, server_with

from protocol.http import HTTPError
from protocol.tokenize.handlers import detokenize, tokenize

pytestmark = pytest.mark.anyio


async def call(handler: object, body: dict, engine: ScriptedEngine | None = None) -> dict:
    request = make_request(body, server=server_with(engine or ScriptedEngine()))
    response = await handler(request)  # type: ignore[operator]
    assert response.status == 200
    return orjson.loads(response.body)


async def test_tokenize_prompt_adds_special_tokens_by_default() -> None:
    body = await call(tokenize, {"prompt": "Hi"})
    assert body == {"count": 3, "max_model_len": 64, "tokens": [BOS, 72, 105], "token_strs": None}


async def test_tokenize_can_return_token_strings() -> None:
    body = await call(
        tokenize, {"prompt": "Hi", "add_special_tokens": False, "return_token_strs": True}
    )
    assert body["tokens"] == [72, 105] and body["token_strs"] == ["H", "i"]


async def test_tokenize_messages_applies_the_chat_template_with_generation_prompt() -> None:
    engine = ScriptedEngine(
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}>{% endif %}"
    )
    body = await call(tokenize, {"messages": [{"role": "user", "content": "Hi"}]}, engine)
    # No BOS: chat's add_special_tokens defaults to False.
    assert body["tokens"] == [72, 105, ord(">")]
    body = await call(
        tokenize,
        {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": False},
        engine,
    )
    assert body["tokens"] == [72, 105]


async def test_tokenize_does_not_enforce_max_model_len() -> None:
    assert (await call(tokenize, {"prompt": "x" * 100}))["count"] == 101


async def test_tokenize_validates_its_form() -> None:
    with pytest.raises(HTTPError) as info:
        await tokenize(make_request({"prompt": 5}, server=server_with(ScriptedEngine())))
    assert info.value.param == "prompt"


async def test_detokenize_returns_the_text() -> None:
    assert await call(detokenize, {"tokens": [BOS, 72, 105]}) == {"prompt": "Hi"}


@pytest.mark.parametrize("tokens", [[72, 256], [-1]])
async def test_detokenize_rejects_out_of_range_ids(tokens: list[int]) -> None:
    with pytest.raises(HTTPError) as info:
        await detokenize(make_request({"tokens": tokens}, server=server_with(ScriptedEngine())))
    assert info.value.status == 400 and "out of vocabulary" in info.value.message


async def test_tokenizer_info_is_off_unless_enabled_then_shows_the_tokenizer(smollm2_tokenizer):
    from configs.settings import Settings
    from protocol.tokenize.handlers import tokenizer_info

    engine = ScriptedEngine()
    engine.tokenizer = smollm2_tokenizer
    with pytest.raises(HTTPError) as info:
        await tokenizer_info(make_request(method="GET", server=server_with(engine)))
    assert info.value.status == 404
    enabled = server_with(engine, settings=Settings(enable_tokenizer_info_endpoint=True))
    response = await tokenizer_info(make_request(method="GET", server=enabled))
    body = orjson.loads(response.body)
    assert body["tokenizer_class"] == type(smollm2_tokenizer).__name__
    assert body["eos_token"] == smollm2_tokenizer.eos_token  # a special token, as its text
    assert body["chat_template"] == CHATML  # the served model's
    assert "vocab_file" not in body and "tokenizer_file" not in body
