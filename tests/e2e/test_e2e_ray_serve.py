"""`lumen serve --num-replicas 2`: the app on two Ray Serve replicas of the embedded model (one
CPU each, on a local Ray instance the server starts), talked to through Ray's HTTP proxy with
the openai client and httpx, the way it is talked to in one process: every replica serves and
is found for Prometheus, a killed replica is replaced while the other keeps serving, and
stopping the server leaves no Ray process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import openai
import pytest

from tests.e2e.server import Server, running

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
    with running({}, log, timeout=600, lumen_serve=args) as server:
        yield server
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


def _replica_pids(server: Server) -> dict[str, int]:
    """Every live replica's id and process, from the front's Prometheus discovery."""
    groups = httpx.get(server.url + "/metrics/replicas").json()
    return {g["labels"]["replica"]: int(g["labels"]["__meta_lumen_pid"]) for g in groups}


def _wait_for_replicas(server: Server, count: int, timeout: float = 240) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _replica_pids(server)
        if len(pids) == count and all(_alive(pid) for pid in pids.values()):
            return pids
        time.sleep(1)
    raise TimeoutError(f"not {count} replicas: {_replica_pids(server)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _chat(server: Server, content: str, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def test_prometheus_finds_every_replica_and_each_counts_its_requests(server):
    pids = _wait_for_replicas(server, 2)
    served_by = set()
    for i in range(40):  # short prompts have no prefix to follow: the least loaded serves
        answer = _chat(server, f"Count to {i}.", max_tokens=4)
        assert answer.status_code == 200
        served_by.add(answer.headers["x-lumen-replica"])
        if served_by == set(pids):
            break
    assert served_by == set(pids)
    groups = httpx.get(server.url + "/metrics/replicas").json()
    for group in groups:
        (target,) = group["targets"]
        text = httpx.get(f"http://{target}/metrics").text
        finished = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total")
        ]
        assert sum(finished) >= 1, (group["labels"], text[:2000])


def test_a_killed_replica_is_replaced_while_the_other_keeps_serving(server):
    pids = _wait_for_replicas(server, 2)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    url = server.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as response:
        victim = response.headers["x-lumen-replica"]
        events = response.iter_lines()
        assert next(line for line in events if line.startswith("data: "))
        os.kill(pids[victim], signal.SIGKILL)
        rest = [line for line in events if line.startswith("data: ")]
    # The cut stream ends with an error event instead of hanging or ending silently.
    assert rest and '"error"' in rest[-1] and "503" in rest[-1], rest[-3:]
    for i in range(4):  # the survivor answers (a request routed to the dead one is retried)
        assert _chat(server, f"Name {i} colours.", max_tokens=4).status_code == 200
    replaced = _wait_for_replicas(server, 2)
    assert victim not in replaced and set(pids) - {victim} <= set(replaced)
    assert _chat(server, "Hello again.", max_tokens=4).status_code == 200
