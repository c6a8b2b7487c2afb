"""The Responses API through the official openai client: create, retrieve, delete, continue,
stream, structured text and function tools, against the real model."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.server import MODEL_NAME

pytestmark = pytest.mark.e2e

GREEDY = {"model": MODEL_NAME, "temperature": 0, "max_output_tokens": 16}


def test_a_response_answers_like_the_chat_completion_it_amounts_to(client):
    response = client.responses.create(input="Name a fruit.", instructions="Be brief.", **GREEDY)
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    chat = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a fruit."},
        ],
        temperature=0,
        max_tokens=16,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens


def test_stored_responses_are_retrieved_continued_and_deleted(client):
    first = client.responses.create(input="My name is Ada. Say hello.", **GREEDY)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(
        input="What is my name?", previous_response_id=first.id, **GREEDY
    )
    assert second.previous_response_id == first.id
    # The continuation's prompt holds the first turn.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(input="x", previous_response_id=first.id, **GREEDY)


def test_a_streamed_response_matches_the_whole_one(client):
    whole = client.responses.create(input="Count to three.", store=False, **GREEDY)
    events = list(client.responses.create(input="Count to three.", stream=True, **GREEDY))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_text_format_json_schema_gives_matching_json(client):
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        input="Pick a colour.",
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema}},
        model=MODEL_NAME,
        max_output_tokens=32,
    )
    assert json.loads(response.output_text)["colour"] in ("red", "green", "blue")


def test_a_forced_function_call_and_its_output(client):
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    response = client.responses.create(
        input="What is the weather in Paris?",
        tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"},
        model=MODEL_NAME,
        max_output_tokens=48,
    )
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    follow_up = client.responses.create(
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}],
        tools=[tool],
        **GREEDY,
    )
    assert follow_up.status in ("completed", "incomplete") and follow_up.output
