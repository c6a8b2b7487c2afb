"""The generated OpenAPI document: a valid 3.1 document, every route in it, and schemas that
match what the converter actually parses and dumps."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate
from protocol_fakes import make_request

from protocol import openapi
from protocol.converter import converter
from protocol.generation.request_schemas import UsageInfo
from protocol.http import error_body
from protocol.openai.chat_schemas import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaMessage,
)
from protocol.openai.completion_schemas import CompletionResponse, CompletionResponseChoice
from protocol.pooling.score_schemas import RerankResponse, RerankResult, RerankUsage
from protocol.routes import build_routes
from protocol.tokenize.schemas import TokenizeResponse


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.build_openapi(build_routes(), "0.0.0")


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A 2020-12 validator of `schema`, its $refs resolved within the document."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def is_valid(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> bool:
    return validator(doc, schema).is_valid(instance)


def request_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def response_schema(doc: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    content = doc["paths"][path][method]["responses"]["200"]["content"]
    return content["application/json"]["schema"]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]


def test_every_route_is_documented_with_its_own_entry(doc: dict[str, Any]) -> None:
    routes = build_routes()
    assert sum(len(item) for item in doc["paths"].values()) == len(routes)
    for route in routes:
        operation = doc["paths"][route.path][route.method.lower()]
        assert operation["summary"] == route.summary
        assert {"200", "4XX", "5XX"} <= set(operation["responses"])
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_request_fields_without_defaults_are_required(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["ChatCompletionRequest"]["required"] == ["messages"]
    # a default the handler refuses (no prompt) does not count
    assert schemas["CompletionRequest"]["required"] == ["prompt"]
    assert set(schemas["RerankRequest"]["required"]) == {"query", "documents"}
    assert schemas["CompletionRequest"]["properties"]["max_tokens"]["default"] == 16
    assert schemas["CohereEmbedRequest"]["properties"]["embedding_types"]["default"] == ["float"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 8}),
        ("/v1/completions", {"prompt": [[1, 2], [3]], "stop": ["\n"], "logit_bias": {"5": -1}}),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
            },
        ),
        ("/v1/embeddings", {"input": ["Hello world", "Bonjour"]}),
        ("/v1/embeddings", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("/score", {"text_1": "q", "text_2": ["a", "b"]}),
        ("/score", {"queries": ["q"], "items": ["a"]}),
        ("/rerank", {"query": "q", "documents": ["a", "b"], "top_n": 1}),
        ("/v2/embed", {"texts": ["a"], "embedding_types": ["float", "binary"]}),
        ("/tokenize", {"prompt": "Hello world", "return_token_strs": True}),
        ("/tokenize", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("/detokenize", {"tokens": [1, 2]}),
    ],
)
def test_requests_the_server_accepts_match_the_schema(
    doc: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    validator(doc, request_schema(doc, path)).validate(body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "n": 0}),
        ("/v1/completions", {"prompt": "x", "top_p": 0}),
        ("/v1/completions", {"prompt": "x", "temperature": -0.5}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}),
        ("/v1/completions", {"prompt": []}),
        ("/v1/completions", {"prompt": [-1]}),
        ("/v1/completions", {"prompt": "x", "stop": [""]}),
        ("/v1/chat/completions", {"messages": [], "tool_choice": "sometimes"}),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        # exactly one of input and messages
        ("/v1/embeddings", {"input": "a", "messages": [{"role": "user", "content": "b"}]}),
        ("/v1/embeddings", {}),
        ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}),
        ("/score", {"text_1": "a"}),
        ("/score", {"text_1": None, "text_2": None}),
        ("/v1/completions", {"prompt": None}),
        ("/rerank", {"query": "q", "documents": []}),
        # the chat form is chosen by the key, so a null `messages` is not the completion form
        ("/tokenize", {"prompt": "x", "messages": None}),
        ("/detokenize", {"tokens": [-1]}),
    ],
)
def test_requests_the_server_refuses_are_outside_the_schema(
    doc: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    assert not is_valid(doc, request_schema(doc, path), body)


def test_the_deployment_narrows_models_and_logprobs() -> None:
    doc = openapi.build_openapi(build_routes(), "0", models=("a", "b"), max_logprobs=5)
    completions = request_schema(doc, "/v1/completions")
    assert is_valid(doc, completions, {"prompt": "x", "model": "b", "logprobs": 5})
    assert is_valid(doc, completions, {"prompt": "x", "model": None})
    assert not is_valid(doc, completions, {"prompt": "x", "model": "c"})
    assert not is_valid(doc, completions, {"prompt": "x", "logprobs": 6})
    chat = {"messages": [], "logprobs": True, "top_logprobs": 6}
    assert not is_valid(doc, request_schema(doc, "/v1/chat/completions"), chat)
    assert not is_valid(doc, request_schema(doc, "/tokenize"), {"prompt": "x", "model": "c"})


def dumped(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(converter.unstructure(obj)))


def test_responses_as_dumped_match_their_schemas(doc: dict[str, Any]) -> None:
    usage = UsageInfo(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    chat = ChatCompletionResponse(
        id="chatcmpl-1",
        created=1,
        model="m",
        choices=[ChatCompletionResponseChoice(index=0, message=ChatMessage(role="assistant"))],
        usage=usage,
    )
    completion = CompletionResponse(
        id="cmpl-1",
        created=1,
        model="m",
        choices=[CompletionResponseChoice(index=0, text="hi", stop_reason=7)],
        usage=usage,
    )
    # `document` is dropped when None (return_documents: false)
    rerank = RerankResponse(
        id="score-1",
        model="m",
        usage=RerankUsage(prompt_tokens=1, total_tokens=1),
        results=[RerankResult(index=0, relevance_score=0.5)],
    )
    tokens = TokenizeResponse(count=1, max_model_len=8, tokens=[5])
    for path, obj in [
        ("/v1/chat/completions", chat),
        ("/v1/completions", completion),
        ("/rerank", rerank),
        ("/tokenize", tokens),
    ]:
        validator(doc, response_schema(doc, path)).validate(dumped(obj))
    error = doc["paths"]["/tokenize"]["post"]["responses"]["4XX"]["content"]["application/json"]
    validator(doc, error["schema"]).validate(orjson.loads(error_body(400, "bad", "E", "x")))


def test_a_response_with_an_unknown_field_is_refused(doc: dict[str, Any]) -> None:
    body = {"count": 0, "max_model_len": 8, "tokens": [], "token_strs": None, "extra": 1}
    assert not is_valid(doc, response_schema(doc, "/tokenize"), body)


def test_stream_chunks_omit_unset_fields_and_match(doc: dict[str, Any]) -> None:
    chunk_schema = {"$ref": "#/components/schemas/ChatCompletionStreamResponse"}
    for delta in (DeltaMessage(role="assistant", content=""), DeltaMessage()):
        chunk = ChatCompletionStreamResponse(
            id="c",
            created=1,
            model="m",
            choices=[ChatCompletionResponseStreamChoice(index=0, delta=delta)],
        )
        body = dumped(chunk)
        assert "usage" not in body
        validator(doc, chunk_schema).validate(body)
    stream = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    event = stream["text/event-stream"]["schema"]
    validator(doc, event).validate({"data": "[DONE]", "event": "message"})


@pytest.mark.anyio
async def test_the_handlers_serve_the_document_and_a_self_contained_page() -> None:
    handlers = {route.path: route.handler for route in build_routes()}
    response = await handlers["/openapi.json"](make_request())
    assert response.status == 200 and response.media_type == "application/json"
    # Every route but the playground's page and files, which are not API.
    served = {route.path for route in build_routes(playground=False)}
    assert set(orjson.loads(response.body)["paths"]) == served
    page = await handlers["/docs"](make_request())
    assert page.media_type.startswith("text/html")
    assert b"/openapi.json" in page.body
    assert b"http://" not in page.body and b"https://" not in page.body  # nothing to download
