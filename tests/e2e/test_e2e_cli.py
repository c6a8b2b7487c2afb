"""`lumen serve` end to end: it serves, and on SIGTERM it drains. A new connection is refused
(or answered 503), a stream that fits the shutdown timeout completes, one that does not is cut
when the timeout is up, and the process exits 0 without a traceback."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import orjson
import pytest

from tests.e2e.server import MODEL_NAME, Server

pytestmark = pytest.mark.e2e

SHUTDOWN_TIMEOUT_S = 15


class Stream(threading.Thread):
    """One streaming request read in the background."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.body = url, path, body
        self.started = threading.Event()
        self.events: list[dict] = []
        self.done = False  # saw "data: [DONE]"
        self.error: Exception | None = None
        self.ended_at = 0.0
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, timeout=120) as r:
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        self.done = True
                    elif line.startswith("data: "):
                        self.events.append(orjson.loads(line[len("data: ") :]))
                        self.started.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


def refused_or_503(url: str) -> bool:
    """A new connection after the signal: refused, or answered 503 while the signal lands."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url + "/v1/models", timeout=5).status_code
        except httpx.TransportError:
            return True
        if status == 503:
            return True
        time.sleep(0.05)  # answered before the signal was handled
    return False


def test_lumen_serve_serves_then_drains_on_sigterm(tmp_path, smollm2_dir):
    args = ["embedded:smollm2", "--models=[]", f"--shutdown-timeout-s={SHUTDOWN_TIMEOUT_S}"]
    server = Server({}, tmp_path / "server.log", args)
    try:
        server.wait_ready()
        messages = [{"role": "user", "content": "Hello!"}]
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": messages, "max_tokens": 8},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == MODEL_NAME
        assert reply.json()["choices"][0]["message"]["content"]

        short = Stream(
            server.url,
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": 24, "ignore_eos": True, "stream": True},
        )
        # No max_tokens: the whole context, far more than the timeout allows.
        endless = Stream(
            server.url,
            "/v1/completions",
            {"prompt": "Once upon a time", "max_tokens": None, "ignore_eos": True, "stream": True},
        )
        assert short.started.wait(60) and endless.started.wait(60)
        assert short.events and endless.events, (short.error, endless.error)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        assert refused_or_503(server.url)
        short.join(SHUTDOWN_TIMEOUT_S + 30)
        assert short.done and short.error is None
        assert short.events[-1]["choices"][0]["finish_reason"] == "length"
        assert short.ended_at - signalled < SHUTDOWN_TIMEOUT_S

        assert server.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 30) == 0
        endless.join(10)
        assert not endless.done and endless.error is not None  # cut: no [DONE]
        assert endless.ended_at - signalled > SHUTDOWN_TIMEOUT_S - 1
        log = server.log()
        assert f"shutting down: waiting up to {SHUTDOWN_TIMEOUT_S} s for 2 requests" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


def test_the_readme_hypercorn_command_drains_streams_on_sigterm(tmp_path, smollm2_dir):
    """Plain hypercorn gives open connections --graceful-timeout (3 s unless set) after a
    signal; the README's command sets 30 s, so a stream longer than 3 s still completes."""
    options = ("--graceful-timeout", "30")
    server = Server({"LUMEN_MODELS": "[]"}, tmp_path / "server.log", hypercorn_options=options)
    try:
        server.wait_ready()
        # A stream of ~10 s on this machine: long past 3 s, well inside 30 s. The rate is
        # measured, since a decode step takes from ~5 to ~20 ms across the machines we run on.
        body = {"prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": True}
        began = time.monotonic()
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).is_success
        seconds_per_token = (time.monotonic() - began) / 64
        body["max_tokens"] = min(4000, max(160, int(10 / seconds_per_token)))
        stream = Stream(server.url, "/v1/completions", {**body, "stream": True})
        assert stream.started.wait(60) and stream.events, stream.error
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert refused_or_503(server.url)
        stream.join(60)
        assert stream.done and stream.error is None
        assert stream.events[-1]["choices"][0]["finish_reason"] == "length"
        assert stream.ended_at - signalled > 3  # past hypercorn's default grace
        assert server.proc.wait(timeout=60) == 0
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()
