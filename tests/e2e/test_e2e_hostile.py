"""One hostile client against a real server: a well-behaved client sharing it keeps being
served, and the hostile request gets an OpenAI-shaped error or its (slow) answer."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.e2e.server import running


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory, smollm2_dir):
    """Prompts may be as long as the body limit allows, so one can take seconds to tokenize."""
    env = {"LUMEN_MAX_PROMPT_CHARS": str(16 * 2**20)}
    with running(env, tmp_path_factory.mktemp("roomy") / "server.log") as s:
        yield s


def test_a_huge_prompt_being_tokenized_does_not_hold_up_another_clients_stream(roomy_server):
    finished: dict[str, float] = {}

    def hostile() -> None:
        prompt = "many words to tokenize, " * 500_000  # 12 MB: seconds of tokenizing
        response = httpx.post(roomy_server.url + "/tokenize", json={"prompt": prompt}, timeout=300)
        assert response.status_code == 200 and response.json()["count"] > 1_000_000
        finished["hostile"] = time.monotonic()

    thread = threading.Thread(target=hostile)
    thread.start()
    time.sleep(1.5)  # its body is in and tokenizing has begun
    client = openai.OpenAI(base_url=roomy_server.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=24,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    finished["well-behaved"] = time.monotonic()
    thread.join()
    assert text
    # Served while the hostile request was still being tokenized, not after it.
    assert finished["well-behaved"] < finished["hostile"]


def test_a_request_chat_template_is_refused_by_default_and_the_server_serves_on(auth_server):
    client = openai.OpenAI(base_url=auth_server.url + "/v1", api_key="token-abc123", max_retries=0)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "Hi"}]
    hostile = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(openai.BadRequestError, match="trust-request-chat-template"):
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=2, extra_body={"chat_template": hostile}
        )
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
