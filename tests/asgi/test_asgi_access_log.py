"""The one log line per request: what it says, and that the log_requests setting turns it off."""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, discard, http_scope, receive

from asgi.access_log import AccessLogMiddleware
from asgi.app import build_app
from asgi.errors import ErrorMiddleware
from asgi.request_id import RequestIdMiddleware
from configs.settings import Settings
from observability.request_log import current_record
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio

LOGGER = "lumen.requests"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


async def generating_app(scope: Any, rcv: Any, snd: Any) -> None:
    # What AsyncEngine.generate notes for a request: the prompt once, then each token.
    record = current_record()
    assert record is not None
    record.note_prompt_tokens(12)
    await snd({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(3):
        record.note_generation_tokens(1)
        await snd({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
    await snd({"type": "http.response.body", "body": b"", "more_body": False})


async def test_a_generation_request_logs_one_complete_line(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    app = RequestIdMiddleware(AccessLogMiddleware(generating_app))
    headers = [(b"x-request-id", b"trace-7")]
    await app(http_scope("/v1/chat/completions", headers=headers), receive, discard)
    (line,) = lines(caplog)
    got = fields(line)
    assert got["request_id"] == "trace-7"
    assert got["method"] == "POST" and got["path"] == "/v1/chat/completions"
    assert got["status"] == "200"
    assert got["prompt_tokens"] == "12" and got["generation_tokens"] == "3"
    assert re.fullmatch(r"\d+\.\d{3}s", got["ttft"]) and re.fullmatch(r"\d+\.\d{3}s", got["total"])
    assert float(got["ttft"][:-1]) <= float(got["total"][:-1])
    assert not line.endswith("incomplete")
    assert current_record() is None  # nothing leaks past the request


async def test_a_request_without_a_model_logs_dashes(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd({"type": "http.response.start", "status": 404, "headers": []})
        await snd({"type": "http.response.body", "body": b"{}", "more_body": False})

    await AccessLogMiddleware(app)(http_scope("/v1/nope", "GET"), receive, discard)
    got = fields(lines(caplog)[0])
    assert got["status"] == "404" and got["request_id"] == "-"
    assert got["prompt_tokens"] == got["generation_tokens"] == got["ttft"] == "-"


async def test_a_crash_is_logged_with_the_500_the_client_got(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        raise RuntimeError("boom")

    sent = Collector()
    await AccessLogMiddleware(ErrorMiddleware(app))(http_scope(), receive, sent)
    assert sent.start["status"] == 500
    assert fields(lines(caplog)[0])["status"] == "500"


async def test_a_stream_cut_short_is_marked_incomplete(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd({"type": "http.response.start", "status": 200, "headers": []})
        await snd({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        # ... and the client went away: the router returns without ending the body.

    await AccessLogMiddleware(app)(http_scope(), receive, discard)
    (line,) = lines(caplog)
    assert fields(line)["status"] == "200" and line.endswith(" incomplete")


async def test_a_path_cannot_forge_log_fields(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    await AccessLogMiddleware(generating_app)(
        http_scope("/v1/x status=200\nrequest_id=evil"), receive, discard
    )
    (line,) = lines(caplog)
    assert "\n" not in line and fields(line)["path"] == "/v1/x%20status=200%0Arequest_id=evil"


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_log_requests_setting_turns_the_line_on_and_off(caplog, enabled) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    settings = Settings(log_requests=enabled)
    app = build_app(settings)
    state = {"server": ServerState(settings)}
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def client() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()  # a client that stays connected

    sent = Collector()
    await app(http_scope("/version", "GET", state=state), client, sent)
    assert sent.start["status"] == 200
    assert len(lines(caplog)) == (1 if enabled else 0)
