"""`lumen serve --reasoning-parser qwen3` on the embedded model, talked to with the openai
client. SmolLM2 does not think on its own, so a regex constraint makes it write a thought, the
closing tag and an answer (its vocabulary has no `</think>` token, so the constraint covers the
whole reply), under a Qwen3-style chat template that opens the thinking block in the prompt (an
empty, closed one with enable_thinking false)."""

from __future__ import annotations

import re

import openai
import pytest

from tests.e2e.server import Server

TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
THOUGHT_THEN_ANSWER = {"structured_outputs": {"regex": r"[a-z ]{5,40}</think>[A-Z][a-z ]{3,30}"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("reasoning")
    (folder / "template.jinja").write_text(TEMPLATE)
    args = [
        "embedded:smollm2",
        "--models=[]",
        "--dtype=float32",
        "--reasoning-parser=qwen3",
        f"--chat-template={folder / 'template.jinja'}",
    ]
    server = Server({}, folder / "server.log", lumen_serve=args)
    try:
        server.wait_ready()
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    finally:
        server.stop()


def test_thinking_and_answer_come_apart_in_whole_and_streamed_replies(client):
    reply = client.chat.completions.create(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        messages=MESSAGES,
        max_tokens=60,
        temperature=0,
        extra_body=THOUGHT_THEN_ANSWER,
    )
    message = reply.choices[0].message
    assert re.fullmatch(r"[a-z ]{5,40}", message.reasoning), message
    assert re.fullmatch(r"[A-Z][a-z ]{3,30}", message.content), message
    assert reply.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        messages=MESSAGES,
        max_tokens=60,
        temperature=0,
        stream=True,
        extra_body=THOUGHT_THEN_ANSWER,
    )
    reasoning, content = [], []
    for chunk in stream:
        for choice in chunk.choices:
            reasoning.append(getattr(choice.delta, "reasoning", None) or "")
            content.append(choice.delta.content or "")
    assert ("".join(reasoning), "".join(content)) == (message.reasoning, message.content)


def test_enable_thinking_false_gives_a_plain_answer(client):
    reply = client.chat.completions.create(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    message = reply.choices[0].message
    assert message.reasoning is None
    assert message.content and "</think>" not in message.content
