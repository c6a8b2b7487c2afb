from __future__ import annotations

import inspect

import orjson
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from protocol_fakes import ScriptedEngine, make_request, server_with

from engine.admission import Admission
from protocol.http import HTTPError
from protocol.model_resolution import resolve_model
from protocol.openai.models import list_models
from protocol.operations.handlers import health, load, metrics, version
from protocol.routes import build_routes

pytestmark = pytest.mark.anyio


async def test_health_is_empty_json_when_ready() -> None:
    response = await health(make_request(server=server_with(ScriptedEngine())))
    assert response.status == 200 and orjson.loads(response.body) == {}


async def test_health_is_503_while_loading() -> None:
    response = await health(make_request(server=server_with(status="loading")))
    assert response.status == 503 and orjson.loads(response.body) == {"status": "loading"}


async def test_health_reports_a_failed_load() -> None:
    server = server_with(status="failed", error="out of memory")
    response = await health(make_request(server=server))
    assert response.status == 503
    assert orjson.loads(response.body) == {"status": "failed", "error": "out of memory"}


def test_ping_is_health_for_get_and_post() -> None:
    routes = {(r.method, r.path): inspect.unwrap(r.handler) for r in build_routes()}
    assert routes[("GET", "/ping")] is health
    assert routes[("POST", "/ping")] is health


def test_routes_cover_the_protocol_surface() -> None:
    assert {(route.method, route.path) for route in build_routes()} == {
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions/batch"),
        ("POST", "/v1/completions/render"),
        ("POST", "/invocations"),
        ("POST", "/generative_scoring"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/{response_id}"),
        ("DELETE", "/v1/responses/{response_id}"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/sleep"),
        ("POST", "/wake_up"),
        ("GET", "/is_sleeping"),
        ("POST", "/v1/chat/completions/render"),
        ("POST", "/v1/embeddings"),
        ("POST", "/pooling"),
        ("POST", "/classify"),
        ("POST", "/score"),
        ("POST", "/v1/score"),
        ("POST", "/rerank"),
        ("POST", "/v1/rerank"),
        ("POST", "/v2/rerank"),
        ("POST", "/v2/embed"),
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
        ("GET", "/tokenizer_info"),
        ("GET", "/v1/models"),
        ("GET", "/health"),
        ("GET", "/ping"),
        ("POST", "/ping"),
        ("GET", "/load"),
        ("GET", "/version"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/"),
        ("GET", "/playground/markdown.js"),
        ("GET", "/playground/playground.css"),
        ("GET", "/playground/playground.js"),
    }


async def test_version_reports_a_version_string() -> None:
    response = await version(make_request())
    body = orjson.loads(response.body)
    assert set(body) == {"version"} and body["version"]


async def test_metrics_exposes_the_registry_in_prometheus_text() -> None:
    response = await metrics(make_request())
    assert response.status == 200 and response.media_type == CONTENT_TYPE_LATEST
    assert b"vllm:num_requests_running" in response.body


async def test_models_lists_one_card_per_engine() -> None:
    server = server_with(ScriptedEngine(name="a"), ScriptedEngine(name="b", max_model_len=128))
    body = orjson.loads((await list_models(make_request(server=server))).body)
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == ["a", "b"]
    card = body["data"][1]
    assert {k: v for k, v in card.items() if k != "permission"} == {
        "id": "b",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "lumen",
        "root": "/models/b",
        "parent": None,
        "max_model_len": 128,
    }
    (permission,) = card["permission"]
    assert permission["id"].startswith("modelperm-")
    assert permission["object"] == "model_permission" and permission["allow_sampling"] is True


async def test_models_is_empty_while_loading() -> None:
    body = orjson.loads(
        (await list_models(make_request(server=server_with(status="loading")))).body
    )
    assert body == {"object": "list", "data": []}


def test_absent_or_empty_model_means_the_first_engine() -> None:
    first, second = ScriptedEngine(name="a"), ScriptedEngine(name="b")
    request = make_request(server=server_with(first, second))
    assert resolve_model(request, None).engine is first
    assert resolve_model(request, "").engine is first
    assert resolve_model(request, "b").engine is second


def test_unknown_model_is_a_404_naming_it() -> None:
    with pytest.raises(HTTPError) as info:
        resolve_model(make_request(server=server_with(ScriptedEngine())), "foo")
    err = info.value
    assert (err.status, err.err_type, err.param) == (404, "NotFoundError", "model")
    assert err.message == "The model `foo` does not exist."


@pytest.mark.parametrize(("status", "words"), [("loading", "still loading"), ("failed", "boom")])
def test_no_engine_yet_is_a_503(status: str, words: str) -> None:
    with pytest.raises(HTTPError) as info:
        resolve_model(make_request(server=server_with(status=status, error="boom")), "m")
    assert info.value.status == 503 and words in info.value.message


async def test_health_is_503_while_draining() -> None:
    server = server_with(ScriptedEngine())
    server.draining = True
    response = await health(make_request(server=server))
    assert response.status == 503 and orjson.loads(response.body) == {"status": "draining"}


async def test_deep_health_serves_a_real_request_on_every_model() -> None:
    engine = ScriptedEngine()
    response = await health(make_request(server=server_with(engine), query_string=b"deep=true"))
    assert response.status == 200
    assert orjson.loads(response.body) == {"status": "ready", "models": ["test-model"]}
    ((_, params),) = engine.calls[0][1]
    assert params.max_tokens == 1
    broken = ScriptedEngine(fail_after=0)
    response = await health(make_request(server=server_with(broken), query_string=b"deep=true"))
    body = orjson.loads(response.body)
    assert response.status == 503 and "engine exploded" in body["errors"]["test-model"]


async def test_concurrent_deep_checks_share_one_probe() -> None:
    import anyio

    engine = ScriptedEngine()
    server = server_with(engine)
    statuses = []

    async def check() -> None:
        response = await health(make_request(server=server, query_string=b"deep=true"))
        statuses.append(response.status)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(check)
    assert statuses == [200] * 5 and len(engine.calls) == 1
    await check()  # the next one after it finished runs its own
    assert len(engine.calls) == 2


async def test_a_model_at_capacity_is_healthy_under_the_deep_check() -> None:
    engine = ScriptedEngine()
    engine.admission = Admission("m", max_sequences=1, num_sequences=1)
    response = await health(make_request(server=server_with(engine), query_string=b"deep=true"))
    assert response.status == 200 and engine.calls == []


@pytest.mark.parametrize("authorized", [True, False])
async def test_a_dead_or_stuck_engine_makes_health_503(authorized: bool) -> None:
    import time

    dead, stuck, fine = (ScriptedEngine(name=n) for n in ("dead", "stuck", "fine"))
    dead.error = RuntimeError("boom")
    stuck.step_started = time.monotonic() - 1000  # the default watchdog: 120 s
    fine.step_started = time.monotonic()
    request = make_request(server=server_with(dead, stuck, fine), authorized=authorized)
    response = await health(request)
    body = orjson.loads(response.body)
    assert response.status == 503 and body["status"] == "unhealthy"
    if authorized:
        assert set(body["errors"]) == {"dead", "stuck"}
        assert "boom" in body["errors"]["dead"] and "step_watchdog_s" in body["errors"]["stuck"]
    else:
        assert body == {"status": "unhealthy"}  # no internals for a client without the key
    assert (await health(make_request(server=server_with(fine)))).status == 200


async def test_load_reports_requests_in_flight() -> None:
    server = server_with(ScriptedEngine())
    server.in_flight = 3
    response = await load(make_request(server=server))
    assert orjson.loads(response.body) == {"server_load": 3}


async def test_a_model_at_capacity_answers_429_with_retry_after() -> None:
    engine = ScriptedEngine(max_model_len=512)
    engine.admission = Admission("m", max_sequences=1, num_sequences=1)
    (handler,) = [r.handler for r in build_routes() if r.path == "/v1/chat/completions"]
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with pytest.raises(HTTPError) as info:
        await handler(make_request(body, server=server_with(engine)))
    assert info.value.status == 429 and info.value.err_type == "RateLimitError"
    assert (b"retry-after", b"1") in info.value.to_response().headers
    assert engine.calls == []  # refused before anything started


@pytest.mark.parametrize(("n", "content", "admitted"), [(2, "Hi", True), (3, "Hi", False)])
async def test_admission_weighs_a_stream_by_its_sequences_and_prompt_tokens(n, content, admitted):
    engine = ScriptedEngine(max_model_len=512)
    (handler,) = [r.handler for r in build_routes() if r.path == "/v1/completions"]
    engine.admission = Admission("m", max_sequences=3, max_tokens=8, num_sequences=1, num_tokens=2)
    body = {"prompt": content, "n": n, "stream": True}  # BOS and a token per character
    request = make_request(body, server=server_with(engine))
    if admitted:
        assert (await handler(request)).status == 200
    else:
        with pytest.raises(HTTPError, match=r"at capacity \(1 sequences, 2 prompt tokens"):
            await handler(request)
    engine.admission.num_sequences = 0  # idle: anything the per-request caps allow
    body["prompt"] = "Hi" * 20
    assert (await handler(make_request(body, server=server_with(engine)))).status == 200


async def test_engine_refusals_map_to_http_statuses() -> None:
    from engine.errors import EngineDeadError, EngineOverloadedError
    from protocol.admission import engine_errors_as_http

    for exc, status in ((EngineOverloadedError("full"), 429), (EngineDeadError("dead"), 503)):

        async def refusing(request, exc=exc):
            raise exc

        with pytest.raises(HTTPError) as info:
            await engine_errors_as_http(refusing)(make_request())
        assert info.value.status == status


async def test_a_client_without_the_key_learns_no_internal_error_text() -> None:
    server = server_with(status="failed", error="out of memory at /srv/models/x")
    response = await health(make_request(server=server, authorized=False))
    assert response.status == 503
    assert orjson.loads(response.body) == {"status": "failed"}


async def test_the_deep_check_needs_the_key() -> None:
    engine = ScriptedEngine()
    request = make_request(server=server_with(engine), query_string=b"deep=true", authorized=False)
    with pytest.raises(HTTPError) as info:
        await health(request)
    assert (info.value.status, info.value.err_type) == (401, "AuthenticationError")
    assert engine.calls == []
