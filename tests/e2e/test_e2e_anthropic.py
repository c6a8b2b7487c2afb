"""The Anthropic Messages API through the official anthropic client against the real model:
create, stream, count tokens, a forced tool and its result, errors and the x-api-key header."""

from __future__ import annotations

import anthropic
import pytest

from tests.e2e.server import MODEL_NAME

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "Name a fruit."}]
# The current SDK no longer has sampling arguments; older clients and other tools still send
# them, and the server reads them.
GREEDY = {"temperature": 0}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def test_a_message_answers_like_the_chat_completion_it_amounts_to(claude, client):
    message = claude.messages.create(
        model=MODEL_NAME, max_tokens=16, system="Be brief.", messages=USER, extra_body=GREEDY
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason in ("end_turn", "max_tokens")
    chat = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "system", "content": "Be brief."}, *USER],
        max_tokens=16,
        temperature=0,
    )
    assert message.content[0].text == chat.choices[0].message.content
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    assert message.usage.output_tokens == chat.usage.completion_tokens
    counted = claude.messages.count_tokens(model=MODEL_NAME, system="Be brief.", messages=USER)
    assert counted.input_tokens == message.usage.input_tokens


def test_a_streamed_message_matches_the_whole_one(claude):
    kwargs = dict(model=MODEL_NAME, max_tokens=16, messages=USER, extra_body=GREEDY)
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_stop_sequences_end_the_message_and_are_reported(claude):
    free = claude.messages.create(model=MODEL_NAME, max_tokens=24, messages=USER, extra_body=GREEDY)
    word = free.content[0].text.split()[1]  # a word the model writes past its first
    stopped = claude.messages.create(
        model=MODEL_NAME,
        max_tokens=24,
        messages=USER,
        stop_sequences=[word],
        extra_body=GREEDY,
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert word not in stopped.content[0].text


def test_a_forced_tool_and_its_result(claude):
    message = claude.messages.create(
        model=MODEL_NAME,
        max_tokens=48,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (call,) = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input["city"], str)
    assert message.stop_reason == "tool_use"
    follow_up = claude.messages.create(
        model=MODEL_NAME,
        max_tokens=16,
        extra_body=GREEDY,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": message.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C"}
                ],
            },
        ],
    )
    assert follow_up.content and follow_up.usage.input_tokens > message.usage.input_tokens


def test_errors_are_anthropic_errors(claude):
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=USER)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=MODEL_NAME, max_tokens=20_000, messages=USER)


def test_the_api_key_is_read_from_x_api_key(auth_server):
    keyed = anthropic.Anthropic(base_url=auth_server.url, api_key="token-abc123", max_retries=0)
    message = keyed.messages.create(model=MODEL_NAME, max_tokens=2, messages=USER)
    assert message.usage.output_tokens <= 2
    wrong = anthropic.Anthropic(base_url=auth_server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=MODEL_NAME, max_tokens=2, messages=USER)
