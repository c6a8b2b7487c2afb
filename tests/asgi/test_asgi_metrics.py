from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from asgi_fakes import discard, http_scope, receive

from asgi.metrics import MetricsMiddleware
from observability.metrics import REGISTRY

pytestmark = pytest.mark.anyio

KNOWN = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/v1/responses/{response_id}"})


def requests(handler: str, method: str, status: str) -> float:
    labels = {"handler": handler, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def durations(handler: str, method: str) -> float:
    labels = {"handler": handler, "method": method}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


def in_progress(handler: str, method: str) -> float:
    labels = {"handler": handler, "method": method}
    return REGISTRY.get_sample_value("http_requests_in_progress", labels) or 0.0


def responding(status: int) -> Any:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await snd({"type": "http.response.start", "status": status, "headers": []})
        await snd({"type": "http.response.body", "body": b"{}", "more_body": False})

    return app


@pytest.mark.parametrize(
    ("path", "status", "handler", "label"),
    [
        ("/v1/chat/completions", 200, "/v1/chat/completions", "2xx"),
        ("/v1/chat/completions", 422, "/v1/chat/completions", "4xx"),
        ("/v1/models/", 200, "/v1/models", "2xx"),  # trailing slash joins its route
        ("/v1/no/such/thing", 404, "other", "4xx"),  # unknown paths share one label
        ("/v1/models/some-model-id", 404, "other", "4xx"),
        # A path with an id in it is labelled by its route, never by the id.
        ("/v1/responses/resp_0123", 200, "/v1/responses/{response_id}", "2xx"),
        ("/v1/responses/resp_0123/extra", 404, "other", "4xx"),
    ],
)
async def test_counts_by_route_and_status_class(
    path: str, status: int, handler: str, label: str
) -> None:
    before = requests(handler, "POST", label)
    before_duration = durations(handler, "POST")
    await MetricsMiddleware(responding(status), known_paths=KNOWN)(
        http_scope(path), receive, discard
    )
    assert requests(handler, "POST", label) == before + 1
    assert durations(handler, "POST") == before_duration + 1
    if handler == "other":  # the raw path never becomes a label value
        assert requests(path, "POST", label) == 0


async def test_unknown_method_is_labelled_other() -> None:
    before = requests("/health", "other", "2xx")
    await MetricsMiddleware(responding(200), known_paths=KNOWN)(
        http_scope("/health", method="BREW"), receive, discard
    )
    assert requests("/health", "other", "2xx") == before + 1


async def test_exception_before_start_counts_5xx_and_reraises() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        raise RuntimeError("boom")

    before = requests("/v1/models", "GET", "5xx")
    with pytest.raises(RuntimeError):
        await MetricsMiddleware(app, known_paths=KNOWN)(
            http_scope("/v1/models", "GET"), receive, discard
        )
    assert requests("/v1/models", "GET", "5xx") == before + 1
    assert in_progress("/v1/models", "GET") == 0


async def test_in_progress_gauge_during_request() -> None:
    during: list[float] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        during.append(in_progress("/v1/chat/completions", "PUT"))
        await responding(200)(scope, rcv, snd)

    base = in_progress("/v1/chat/completions", "PUT")
    await MetricsMiddleware(app, known_paths=KNOWN)(
        http_scope("/v1/chat/completions", "PUT"), receive, discard
    )
    assert during == [base + 1]
    assert in_progress("/v1/chat/completions", "PUT") == base


async def test_counted_once_even_if_app_lingers_after_body() -> None:
    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        await responding(200)(scope, rcv, snd)
        await anyio.lowlevel.checkpoint()

    before = requests("/v1/models", "DELETE", "2xx")
    await MetricsMiddleware(app, known_paths=KNOWN)(
        http_scope("/v1/models", "DELETE"), receive, discard
    )
    assert requests("/v1/models", "DELETE", "2xx") == before + 1
