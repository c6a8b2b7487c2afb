"""`lumen serve --reasoning-parser qwen3` on the embedded model, talked to with the openai
client (chat and Responses) and the anthropic client. SmolLM2 does not think on its own, so a
regex constraint makes it write a thought, the closing tag and an answer (its vocabulary has no
`</think>` token, so the constraint covers the whole reply), under a Qwen3-style chat template
that opens the thinking block in the prompt (an empty, closed one with enable_thinking false)."""

from __future__ import annotations

import re

import anthropic
import openai
import pytest

from tests.e2e.server import running

TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
THOUGHT_THEN_ANSWER = {"structured_outputs": {"regex": r"[a-z ]{5,40}</think>[A-Z][a-z ]{3,30}"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("reasoning")
    (folder / "template.jinja").write_text(TEMPLATE)
    args = [
        "embedded:smollm2",
        "--models=[]",
        "--dtype=float32",
        "--reasoning-parser=qwen3",
        f"--chat-template={folder / 'template.jinja'}",
    ]
    with running({}, folder / "server.log", lumen_serve=args) as server:
        yield server


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_thinking_and_answer_come_apart_in_whole_and_streamed_replies(client):
    request = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 60,
        "temperature": 0,
        "extra_body": THOUGHT_THEN_ANSWER,
    }
    reply = client.chat.completions.create(**request)
    message = reply.choices[0].message
    assert re.fullmatch(r"[a-z ]{5,40}", message.reasoning), message
    assert re.fullmatch(r"[A-Z][a-z ]{3,30}", message.content), message
    assert reply.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(**request, stream=True)
    reasoning, content = [], []
    for chunk in stream:
        for choice in chunk.choices:
            reasoning.append(getattr(choice.delta, "reasoning", None) or "")
            content.append(choice.delta.content or "")
    assert ("".join(reasoning), "".join(content)) == (message.reasoning, message.content)


def test_enable_thinking_false_gives_a_plain_answer(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    message = reply.choices[0].message
    assert message.reasoning is None
    assert message.content and "</think>" not in message.content


def test_a_response_has_a_reasoning_item_whole_and_streamed(client):
    request = {
        "model": MODEL,
        "input": MESSAGES[0]["content"],
        "max_output_tokens": 60,
        "temperature": 0,
        "extra_body": THOUGHT_THEN_ANSWER,
    }
    response = client.responses.create(**request)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and message.type == "message"
    (thought,) = reasoning.content
    assert re.fullmatch(r"[a-z ]{5,40}", thought.text), reasoning
    assert re.fullmatch(r"[A-Z][a-z ]{3,30}", response.output_text), response
    assert 0 < response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens

    events = list(client.responses.create(**request, stream=True))
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == thought.text
    final = events[-1].response
    assert final.output[0].content[0].text == thought.text
    assert final.output_text == response.output_text


def test_a_message_has_a_thinking_block_whole_and_streamed(server):
    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    request = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": MESSAGES,
        "extra_body": {"temperature": 0},
    }
    # Nothing makes SmolLM2 close the block here: its whole reply is thinking.
    message = claude.messages.create(**request)
    (block,) = message.content
    assert block.type == "thinking" and block.thinking and block.signature
    with claude.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    assert [b.type for b in streamed.content] == ["thinking"]
    assert streamed.content[0].thinking == block.thinking and streamed.content[0].signature

    plain = claude.messages.create(**request, thinking={"type": "disabled"})
    assert [b.type for b in plain.content] == ["text"]
