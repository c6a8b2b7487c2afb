"""`lumen serve --num-replicas 2`: the app on two Ray Serve replicas of the embedded model (one
CPU each, on a local Ray instance the server starts), talked to through Ray's HTTP proxy with
the openai client and httpx, the way it is talked to in one process. Stopping the server
leaves no Ray process behind."""

from __future__ import annotations

import subprocess
import time

import httpx
import openai
import pytest

from tests.e2e.server import Server

pytest.importorskip("ray.serve")

KEY = "replicas-key"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "Say hi."}]


def _ray_processes() -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if "raylet" in line or "gcs_server" in line]


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_dir):
    assert not _ray_processes(), "a Ray instance is already running here"
    args = [
        "embedded:smollm2",
        "--models=[]",
        "--dtype=float32",
        "--num-replicas=2",
        "--ray-cpus-per-replica=1",
        f"--api-key={KEY}",
    ]
    log = tmp_path_factory.mktemp("ray_serve") / "server.log"
    server = Server({}, log, lumen_serve=args)
    try:
        server.wait_ready(timeout=600)
        yield server
    finally:
        server.stop()
    deadline = time.monotonic() + 30
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(), server.log()[-3000:]


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_chat_whole_and_streamed_through_the_proxy(client):
    reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0)
    text = reply.choices[0].message.content
    assert text and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=12, temperature=0, stream=True
    )
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 2 and "".join(chunks) == text


def test_auth_errors_and_request_ids_are_the_apps(server):
    refused = httpx.post(server.url + "/v1/chat/completions", json={"messages": HI})
    assert refused.status_code == 401
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}

    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": "mine-123"}
    bad = httpx.post(server.url + "/v1/chat/completions", json={"messages": 3}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    assert bad.headers.get_list("x-request-id") == ["mine-123"]

    ok = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.json()["data"][0]["id"] == MODEL
    assert len(ok.headers.get_list("x-request-id")) == 1
