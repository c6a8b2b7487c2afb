"""Tool calling and the chat extras against the real server (fp32), through the openai client.

SmolLM2's own template ignores `tools`, so these requests bring a hermes-style template
(tests/templates/hermes_tools.jinja) as the request's `chat_template`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.e2e.server import MODEL_NAME

HERMES_TEMPLATE = (Path(__file__).parents[1] / "templates" / "hermes_tools.jinja").read_text()
TEMPLATE = {"chat_template": HERMES_TEMPLATE}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


def ask(client: openai.OpenAI, **fields):
    fields.setdefault("messages", QUESTION)
    return client.chat.completions.create(
        model=MODEL_NAME, temperature=0, max_tokens=80, extra_body=TEMPLATE, **fields
    )


def check_calls(tool_calls) -> list[tuple[str, dict]]:
    """Each call names a given tool and its arguments validate against that tool's schema."""
    calls = []
    for call in tool_calls:
        assert call.type == "function" and call.id.startswith("chatcmpl-tool-")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        calls.append((call.function.name, arguments))
    return calls


def test_required_tool_choice_makes_valid_calls(client):
    choice = ask(client, tools=TOOLS, tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ""
    assert check_calls(choice.message.tool_calls)


def test_required_streams_the_same_calls_through_the_sdk_accumulator(client):
    whole = ask(client, tools=TOOLS, tool_choice="required").choices[0]
    with client.chat.completions.stream(
        model=MODEL_NAME,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=80,
        extra_body=TEMPLATE,
    ) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert check_calls(streamed.message.tool_calls) == check_calls(whole.message.tool_calls)


def test_named_tool_choice_calls_that_tool(client):
    named = {"type": "function", "function": {"name": "get_time"}}
    choice = ask(client, tools=TOOLS, tool_choice=named).choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's reason for a named call
    assert [name for name, _ in check_calls(choice.message.tool_calls)] == ["get_time"]
    chunks = list(ask(client, tools=TOOLS, tool_choice=named, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "get_time"
    arguments = "".join(t.function.arguments or "" for t in calls)
    assert arguments == choice.message.tool_calls[0].function.arguments


def test_parallel_tool_calls_false_makes_one_call(client):
    choice = ask(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False).choices[0]
    assert len(choice.message.tool_calls) == 1


# The hermes format, forced by a regex so the small model writes a call: what "auto" parses.
HERMES_CALL = (
    r'<tool_call>\n\{"name": "get_weather", "arguments": '
    r'\{"city": "[A-Z][a-z]{1,12}", "unit": "celsius"\}\}\n</tool_call>'
)


@pytest.mark.parametrize("stream", [False, True])
def test_auto_parses_hermes_calls_from_free_output(client, stream):
    fields = {
        "tools": TOOLS,
        "extra_body": {**TEMPLATE, "structured_outputs": {"regex": HERMES_CALL}},
    }
    if not stream:
        choice = client.chat.completions.create(
            model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=60, **fields
        ).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        ((name, arguments),) = check_calls(choice.message.tool_calls)
        assert name == "get_weather" and arguments["unit"] == "celsius"
        return
    with client.chat.completions.stream(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=60, **fields
    ) as events:
        choice = events.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    assert [name for name, _ in check_calls(choice.message.tool_calls)] == ["get_weather"]


def test_auto_finish_reason_matches_what_was_returned(client):
    # Unconstrained, the small model may or may not call; either way the answer is consistent.
    choice = ask(client, tools=TOOLS).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        check_calls(choice.message.tool_calls)
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


def test_tool_results_round_trip(client, http):
    messages = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-0123456789abcdef",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "chatcmpl-tool-0123456789abcdef",
            "content": '{"temperature": 21, "sky": "clear"}',
        },
    ]
    choice = ask(client, messages=messages, tools=TOOLS, tool_choice="none").choices[0]
    assert choice.message.content and not choice.message.tool_calls
    tokens = http.post(
        "/tokenize",
        json={"model": MODEL_NAME, "messages": messages, "tools": TOOLS, **TEMPLATE},
    ).json()["tokens"]
    prompt = http.post("/detokenize", json={"model": MODEL_NAME, "tokens": tokens}).json()
    assert '"arguments": {"city": "Paris", "unit": "celsius"}' in prompt["prompt"]
    assert (
        '<tool_response>\n{"temperature": 21, "sky": "clear"}\n</tool_response>' in prompt["prompt"]
    )
    assert '"name": "get_time"' in prompt["prompt"]  # the tools reached the template


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "launch"}}},
            "does not match any of the specified tools",
        ),
        ({"tools": [], "tool_choice": "auto"}, "tools must not be an empty array"),
        ({"tool_choice": "required", "tools": None}, "tools must be set"),
    ],
)
def test_bad_tool_choice_is_a_400(client, fields, words):
    fields = {"tools": TOOLS, **fields}
    if fields["tools"] is None:
        del fields["tools"]
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, **fields)
    assert words in info.value.body["message"]


def test_continue_final_message_and_echo(client):
    messages = [
        {"role": "user", "content": "List three colors."},
        {"role": "assistant", "content": "Red, green,"},
    ]
    extra = {"add_generation_prompt": False, "continue_final_message": True, "echo": True}
    choice = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, temperature=0, max_tokens=5, extra_body=extra
    ).choices[0]
    # The reply continues the assistant's text (no new turn), and echo puts that text first.
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("Red, green,") and len(choice.message.content) > 11
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=messages,
            max_tokens=5,
            extra_body={"continue_final_message": True},
        )
    assert "Cannot set both" in info.value.body["message"]
