"""Every other route, the error shapes, metrics, request ids and auth, over real HTTP."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.e2e.server import EMBEDDING_MODEL_NAME, MODEL_NAME

pytestmark = pytest.mark.e2e


def _assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    return error


def test_models_lists_the_served_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_NAME, EMBEDDING_MODEL_NAME]
    card = models[0].model_dump()
    assert card["object"] == "model" and card["owned_by"] and card["max_model_len"] > 0
    assert card["root"]


def test_tokenize_and_detokenize_round_trip(http):
    tok = http.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True}).json()
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"])
    assert tok["max_model_len"] > 0
    assert (
        http.post("/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == "Hello world"
    )
    chat = http.post("/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chat["count"] > tok["count"]  # the template adds the system prompt and role markers


def test_health_version_metrics(http):
    assert http.get("/health").status_code == 200
    assert "version" in http.get("/version").json()
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
    ):
        assert name in metrics.text, name


def test_request_id_is_echoed_and_used_in_the_response_id(http):
    resp = http.post(
        "/v1/completions",
        json={"prompt": "Hi", "max_tokens": 1},
        headers={"X-Request-Id": "my-trace-42"},
    )
    assert resp.headers["x-request-id"] == "my-trace-42"
    assert resp.json()["id"] == "cmpl-my-trace-42"
    assert http.get("/health").headers["x-request-id"]
    # The body's request_id is the base without the header; the header wins over it (vLLM).
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "request_id": "b-7"}
    assert http.post("/v1/chat/completions", json=body).json()["id"] == "chatcmpl-b-7"
    with_header = http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "h-1"})
    assert with_header.json()["id"] == "chatcmpl-h-1"
    embedding = {"model": EMBEDDING_MODEL_NAME, "input": "x", "request_id": "e-1"}
    assert http.post("/v1/embeddings", json=embedding).json()["id"] == "embd-e-1"


@pytest.mark.parametrize(
    ("content", "headers", "status", "needle"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "json"),
        (b'{"prompt": "hi"}', {"content-type": "text/plain"}, 400, "content-type"),
        (
            b'{"prompt": "hi", "max_tokens": "many"}',
            {"content-type": "application/json"},
            400,
            "max_tokens",
        ),
        (
            b'{"prompt": "hi", "temperature": -1}',
            {"content-type": "application/json"},
            400,
            "temperature",
        ),
        (
            b'{"prompt": "hi", "max_tokens": 100000}',
            {"content-type": "application/json"},
            400,
            "max",
        ),
        (
            b'{"prompt": "hi", "stream_options": {"include_usage": true}}',
            {"content-type": "application/json"},
            400,
            "stream",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_400s(http, content, headers, status, needle):
    error = _assert_error(http.post("/v1/completions", content=content, headers=headers), status)
    assert needle in error["message"].lower()
    assert http.get("/health").status_code == 200  # still serving


def test_prompt_over_the_context_names_the_maximum(http):
    max_len = http.get("/v1/models").json()["data"][0]["max_model_len"]
    resp = http.post("/v1/completions", json={"prompt": [1] * max_len, "max_tokens": 10})
    error = _assert_error(resp, 400)
    assert f"maximum context length is {max_len} tokens" in error["message"]


def test_unknown_route_and_wrong_method(http):
    _assert_error(http.get("/v1/nothing-here"), 404)
    _assert_error(http.get("/v1/chat/completions"), 405)


def test_a_websocket_upgrade_is_refused_and_the_server_keeps_serving(http):
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    response = http.get("/v1/chat/completions", headers=headers)
    assert response.status_code == 403
    assert http.get("/health").status_code == 200


def test_api_key_protects_inference_routes(auth_server):
    url = auth_server.url
    assert httpx.get(url + "/health").status_code == 200
    assert httpx.get(url + "/metrics").status_code == 200
    _assert_error(httpx.post(url + "/tokenize", json={"prompt": "x"}), 401)
    _assert_error(httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=url + "/v1", api_key="token-abc123", max_retries=0)
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
    )
    assert resp.choices[0].message.content


def test_cors_preflight_passes_auth_and_responses_name_the_origin(auth_server):
    url, origin = auth_server.url, "https://playground.example"
    preflight = httpx.options(
        url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200  # no key needed: browsers send none with a preflight
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    models = httpx.get(
        url + "/v1/models", headers={"Origin": origin, "Authorization": "Bearer token-abc123"}
    )
    assert models.status_code == 200 and models.headers["access-control-allow-origin"] == "*"
    refused = httpx.get(url + "/v1/models", headers={"Origin": origin})
    assert refused.status_code == 401  # auth sits outside CORS, as in vLLM: no CORS headers
    assert "access-control-allow-origin" not in refused.headers


def test_render_routes_return_the_token_in_request_without_generating(http):
    messages = [{"role": "user", "content": "Hello there"}]
    body = {"messages": messages, "max_tokens": 5, "temperature": 0.3}
    rendered = http.post("/v1/chat/completions/render", json=body).json()
    assert (
        rendered["token_ids"]
        == http.post("/tokenize", json={"messages": messages}).json()["tokens"]
    )
    assert rendered["sampling_params"]["max_tokens"] == 5
    assert rendered["sampling_params"]["temperature"] == 0.3
    (completion,) = http.post(
        "/v1/completions/render", json={"prompt": "Hi", "max_tokens": 2}
    ).json()
    assert completion["token_ids"] == http.post("/tokenize", json={"prompt": "Hi"}).json()["tokens"]


def test_invocations_serves_each_body_by_the_api_it_fits(http):
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}
    answer = openai.types.chat.ChatCompletion.model_validate(
        http.post("/invocations", json=chat).json()
    )
    direct = http.post("/v1/chat/completions", json=chat).json()
    assert answer.choices[0].message.content == direct["choices"][0]["message"]["content"]
    completion = http.post("/invocations", json={"prompt": "Hi", "max_tokens": 2}).json()
    assert completion["object"] == "text_completion"
    embedding = http.post("/invocations", json={"input": "a sentence"}).json()
    assert embedding["model"] == EMBEDDING_MODEL_NAME and len(embedding["data"][0]["embedding"])
    rerank = http.post("/invocations", json={"query": "fruit", "documents": ["apple", "car"]})
    assert [r["index"] for r in rerank.json()["results"]] == [0, 1]
    with http.stream("POST", "/invocations", json={**chat, "stream": True}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert list(stream.iter_lines())[-2] == "data: [DONE]"
    error = _assert_error(http.post("/invocations", json={"question": "?"}), 400)
    assert error["message"] == (
        "Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', "
        "'CompletionRequest', 'EmbeddingRequest', 'ScoreRequest', 'RerankRequest', "
        "'PoolingRequest']"
    )


def _resident_bytes(http: httpx.Client) -> float:
    metrics = http.get("/metrics").text
    return float(re.search(r"^process_resident_memory_bytes (\S+)$", metrics, re.M).group(1))


def test_sleep_frees_memory_and_the_woken_model_says_the_same(auth_server):
    key = {"Authorization": "Bearer token-abc123"}
    body = {
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    with httpx.Client(base_url=auth_server.url, headers=key, timeout=120) as http:
        assert httpx.post(auth_server.url + "/sleep").status_code == 401  # the key guards it
        before = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        awake = _resident_bytes(http)
        assert http.post("/sleep", params={"level": 2}).json() == {"is_sleeping": True, "level": 2}
        try:
            asleep = _resident_bytes(http)
            assert http.get("/is_sleeping").json()["is_sleeping"] is True
            refused = http.post("/v1/chat/completions", json=body)
            error = _assert_error(refused, 503)
            assert "asleep" in error["message"]
            assert http.get("/health").status_code == 200  # asleep on purpose, not unwell
        finally:
            assert http.post("/wake_up").json()["is_sleeping"] is False
        # The weights (135M parameters) and the KV cache are gone while asleep.
        assert awake - asleep > 100 * 2**20, (awake, asleep)
        after = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        assert after["content"] == before["content"]
