"""Embeddings, pooling, score, rerank and classify against a real hypercorn serving four models
at once: the chat model, all-MiniLM-L6-v2, and tiny random-weight cross-encoder and classifier
folders. Embeddings through the official openai client, the rest as curl would send them."""

from __future__ import annotations

import base64
import json
import math
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from tests.e2e.server import EMBEDDING_MODEL_NAME, MODEL_NAME, running

CROSS_ENCODER = "tiny-cross-encoder"
CLASSIFIER = "tiny-classifier"
TEXTS = ["The cat sat on the mat.", "Quantum computers use qubits.", "hi"]


@pytest.fixture(scope="module")
def pooling_server(tmp_path_factory, smollm2_dir, cross_encoder_dir, classifier_dir):
    models = [
        {"name": EMBEDDING_MODEL_NAME, "model": "embedded:all-minilm-l6-v2", "task": "embed"},
        {"name": CROSS_ENCODER, "model": str(cross_encoder_dir)},  # task read from the folder
        {"name": CLASSIFIER, "model": str(classifier_dir), "task": "classify"},
    ]
    log = tmp_path_factory.mktemp("pooling") / "server.log"
    # Trusting request templates: the messages test brings its own.
    env = {"LUMEN_MODELS": json.dumps(models), "LUMEN_TRUST_REQUEST_CHAT_TEMPLATE": "true"}
    with running(env, log) as server:
        yield server


@pytest.fixture
def http(pooling_server):
    with httpx.Client(base_url=pooling_server.url, timeout=120) as c:
        yield c


@pytest.fixture
def client(pooling_server):
    return openai.OpenAI(base_url=pooling_server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    from configs.settings import EMBEDDED_EMBEDDING_MODEL
    from engine.loader import resolve_model_dir

    return SentenceTransformer(str(resolve_model_dir(EMBEDDED_EMBEDDING_MODEL, "")), device="cpu")


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error


def test_models_lists_every_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL_NAME, EMBEDDING_MODEL_NAME, CROSS_ENCODER, CLASSIFIER]


def test_embeddings_equal_sentence_transformers(client, sentence_transformer):
    resp = client.embeddings.create(model=EMBEDDING_MODEL_NAME, input=TEXTS)
    expected = sentence_transformer.encode(TEXTS)
    assert [d.index for d in resp.data] == [0, 1, 2]
    for data, vector in zip(resp.data, expected, strict=True):
        np.testing.assert_allclose(data.embedding, vector, atol=1e-5, rtol=0)
    assert resp.model == EMBEDDING_MODEL_NAME and resp.id.startswith("embd-")
    tokens = sum(len(ids) for ids in sentence_transformer.tokenizer(TEXTS)["input_ids"])
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == tokens


def test_embedding_input_shapes_and_base64(client, http):
    one = client.embeddings.create(model=EMBEDDING_MODEL_NAME, input="hello world")
    ids = http.post("/tokenize", json={"model": EMBEDDING_MODEL_NAME, "prompt": "hello world"})
    tokens = ids.json()["tokens"]
    by_ids = client.embeddings.create(model=EMBEDDING_MODEL_NAME, input=tokens)
    by_id_lists = client.embeddings.create(model=EMBEDDING_MODEL_NAME, input=[tokens, tokens])
    assert by_ids.data[0].embedding == one.data[0].embedding
    assert len(by_id_lists.data) == 2 and by_id_lists.data[1].embedding == one.data[0].embedding
    # base64: the same float32 values, little-endian (the openai client decodes it itself).
    raw = http.post(
        "/v1/embeddings",
        json={"model": EMBEDDING_MODEL_NAME, "input": "hello world", "encoding_format": "base64"},
    ).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == one.data[0].embedding
    # (Without encoding_format the openai client itself asks for base64 and decodes it, so the
    # calls above went through base64 too.)
    as_floats = http.post(
        "/v1/embeddings", json={"model": EMBEDDING_MODEL_NAME, "input": "hello world"}
    ).json()["data"][0]["embedding"]
    assert np.float32(as_floats).tolist() == one.data[0].embedding


def test_embedding_messages_are_templated(http):
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    body = {
        "model": EMBEDDING_MODEL_NAME,
        "messages": [{"role": "user", "content": "hello"}],
        "chat_template": template,
    }
    from_messages = http.post("/v1/embeddings", json=body).json()
    from_text = http.post(
        "/v1/embeddings",
        json={"model": EMBEDDING_MODEL_NAME, "input": "user: hello\n", "add_special_tokens": False},
    ).json()
    assert from_messages["data"][0]["embedding"] == from_text["data"][0]["embedding"]
    no_template = http.post("/v1/embeddings", json={**body, "chat_template": None})
    assert "chat template" in _error(no_template, 400)["message"]


def test_truncation_and_length_limits(http):
    long_text = "word " * 400  # > 256 tokens, MiniLM's maximum
    body = {"model": EMBEDDING_MODEL_NAME, "input": long_text}
    assert (
        "maximum context length is 256"
        in _error(http.post("/v1/embeddings", json=body), 400)["message"]
    )
    truncated = http.post("/v1/embeddings", json={**body, "truncate_prompt_tokens": -1}).json()
    assert truncated["usage"]["prompt_tokens"] == 256
    ten = http.post("/v1/embeddings", json={**body, "truncate_prompt_tokens": 10}).json()
    assert ten["usage"]["prompt_tokens"] == 10
    too_many = http.post("/v1/embeddings", json={**body, "truncate_prompt_tokens": 300})
    assert _error(too_many, 400)["message"] == (
        "truncate_prompt_tokens value is greater than max_model_len. "
        "Please request a smaller truncation size."
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": 5}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": [10**6]}, "input"),
        ({}, "input"),
        ({"input": "x", "dimensions": 8}, "dimensions"),
        ({"input": "x", "encoding_format": "bytes"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_are_400(http, body, param):
    error = _error(http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL_NAME, **body}), 400)
    assert error["param"] == param


def test_tasks_are_checked_and_unknown_models_are_404(http):
    chat_on_embedder = http.post(
        "/v1/chat/completions",
        json={"model": EMBEDDING_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]},
    )
    message = _error(chat_on_embedder, 400)["message"]
    assert "Chat Completions API" in message and "`embed`" in message
    embed_on_chat = http.post("/v1/embeddings", json={"model": MODEL_NAME, "input": "x"})
    assert "`generate`" in _error(embed_on_chat, 400)["message"]
    classify_on_embedder = http.post(
        "/classify", json={"model": EMBEDDING_MODEL_NAME, "input": "x"}
    )
    _error(classify_on_embedder, 400)
    unknown = http.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert _error(unknown, 404)["message"] == "The model `nope` does not exist."
    # Without `model`, each API goes to the first model that can serve it.
    assert http.post("/v1/embeddings", json={"input": "x"}).json()["model"] == EMBEDDING_MODEL_NAME
    assert http.post("/classify", json={"input": "x"}).json()["model"] == CROSS_ENCODER


@pytest.mark.parametrize("model", [MODEL_NAME, EMBEDDING_MODEL_NAME, CROSS_ENCODER, CLASSIFIER])
def test_tokenize_and_detokenize_work_for_every_model(http, model):
    tokens = http.post("/tokenize", json={"model": model, "prompt": "hello world"}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] > 0
    text = http.post("/detokenize", json={"model": model, "tokens": tokens["tokens"]}).json()
    assert "hello world" in text["prompt"]


def test_bi_encoder_score_and_rerank_rank_the_relevant_document_first(http):
    query = "What is the capital of France?"
    docs = ["Bananas are a yellow fruit.", "Paris is the capital of France."]
    score = http.post(
        "/score", json={"model": EMBEDDING_MODEL_NAME, "text_1": query, "text_2": docs}
    ).json()
    assert score["object"] == "list" and score["id"].startswith("score-")
    assert [d["index"] for d in score["data"]] == [0, 1]
    assert all(d["object"] == "score" for d in score["data"])
    assert score["data"][1]["score"] > score["data"][0]["score"]
    assert score["usage"]["prompt_tokens"] > 0 and score["usage"]["completion_tokens"] == 0
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        rerank = http.post(
            path, json={"model": EMBEDDING_MODEL_NAME, "query": query, "documents": docs}
        ).json()
        assert [r["index"] for r in rerank["results"]] == [1, 0]
        assert rerank["results"][0]["document"] == {"text": docs[1]}
        assert rerank["results"][0]["relevance_score"] == score["data"][1]["score"]
        assert set(rerank["usage"]) == {"prompt_tokens", "total_tokens"}
        assert "object" not in rerank and "created" not in rerank


def test_cross_encoder_scores_pairs_like_sentence_transformers(http, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    queries = ["how do magnets work", "what is rust"]
    docs = ["Magnets attract iron.", "Rust is a systems programming language."]
    expected = CrossEncoder(str(cross_encoder_dir), device="cpu").predict(
        list(zip(queries, docs, strict=True))
    )
    for body in (
        {"text_1": queries, "text_2": docs},  # N:N, zipped
        {"queries": queries, "documents": docs},  # vLLM's newer names
        {"data_1": queries, "data_2": docs},
    ):
        resp = http.post("/v1/score", json={"model": CROSS_ENCODER, **body}).json()
        scores = [d["score"] for d in resp["data"]]
        np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    one_to_many = http.post(
        "/score", json={"model": CROSS_ENCODER, "text_1": queries[0], "text_2": docs}
    ).json()
    assert math.isclose(one_to_many["data"][0]["score"], expected[0], abs_tol=1e-5)
    rerank = http.post(
        "/rerank",
        json={
            "model": CROSS_ENCODER,
            "query": queries[0],
            "documents": docs + ["Bananas."],
            "top_n": 2,
            "return_documents": False,
        },
    ).json()
    scores = [r["relevance_score"] for r in rerank["results"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert all("document" not in r for r in rerank["results"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_2"),
        ({"text_1": [], "text_2": ["a"]}, "text_1"),
        ({"text_1": "a"}, "text_1"),
        ({"text_1": 3, "text_2": "a"}, "text_1"),
    ],
)
def test_bad_score_requests_are_400(http, body, param):
    assert _error(http.post("/score", json={"model": CROSS_ENCODER, **body}), 400)["param"] == param


def test_classify_returns_labels_and_probabilities(http):
    resp = http.post("/classify", json={"model": CLASSIFIER, "input": ["great", "awful"]}).json()
    assert resp["id"].startswith("classify-") and resp["object"] == "list"
    for item in resp["data"]:
        assert item["num_classes"] == 3 and len(item["probs"]) == 3
        assert math.isclose(sum(item["probs"]), 1.0, abs_tol=1e-5)
        best = max(range(3), key=lambda i: item["probs"][i])
        assert item["label"] == ["negative", "neutral", "positive"][best]
    assert resp["usage"]["prompt_tokens"] == resp["usage"]["total_tokens"] > 0
    _error(http.post("/classify", json={"model": CLASSIFIER, "input": ""}), 400)


def test_pooling_returns_the_raw_output(http):
    vectors = http.post("/pooling", json={"model": EMBEDDING_MODEL_NAME, "input": "hi"}).json()
    assert vectors["id"].startswith("pooling-") and vectors["data"][0]["object"] == "pooling"
    embedding = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL_NAME, "input": "hi"})
    assert vectors["data"][0]["data"] == embedding.json()["data"][0]["embedding"]
    probs = http.post("/pooling", json={"model": CLASSIFIER, "input": "hi"}).json()
    assert len(probs["data"][0]["data"]) == 3
    wrong_task = http.post(
        "/pooling", json={"model": EMBEDDING_MODEL_NAME, "input": "hi", "task": "classify"}
    )
    assert _error(wrong_task, 400)["message"].startswith("Unsupported task: 'classify'")


def test_cohere_embed_v2(http, sentence_transformer):
    resp = http.post(
        "/v2/embed",
        json={
            "model": EMBEDDING_MODEL_NAME,
            "texts": TEXTS[:2],
            "input_type": "search_document",
            "embedding_types": ["float", "ubinary", "binary", "base64"],
        },
    ).json()
    assert resp["response_type"] == "embeddings_by_type" and resp["texts"] == TEXTS[:2]
    assert resp["meta"]["api_version"] == {"version": "2"}
    tokens = sum(len(ids) for ids in sentence_transformer.tokenizer(TEXTS[:2])["input_ids"])
    assert resp["meta"]["billed_units"]["input_tokens"] == tokens
    floats = np.array(resp["embeddings"]["float"])
    np.testing.assert_allclose(floats, sentence_transformer.encode(TEXTS[:2]), atol=1e-5, rtol=0)
    bits = np.packbits(floats > 0, axis=-1)
    assert resp["embeddings"]["ubinary"] == bits.tolist()
    assert resp["embeddings"]["binary"] == (bits.astype(int) - 128).tolist()
    b64 = np.frombuffer(base64.b64decode(resp["embeddings"]["base64"][0]), dtype="<f4")
    assert b64.tolist() == resp["embeddings"]["float"][0]
    long = {"model": EMBEDDING_MODEL_NAME, "texts": ["word " * 400]}
    assert http.post("/v2/embed", json=long).json()["meta"]["billed_units"]["input_tokens"] == 256
    _error(http.post("/v2/embed", json={**long, "truncate": "NONE"}), 400)


def test_a_long_generation_does_not_block_embeddings(pooling_server, http):
    """Each model has its own engine loop: embeddings answer while a generation streams."""
    generation_done = threading.Event()

    def generate() -> None:
        with httpx.Client(base_url=pooling_server.url, timeout=300) as c:
            c.post(
                "/v1/completions",
                json={"model": MODEL_NAME, "prompt": "Once", "max_tokens": 300, "ignore_eos": True},
            )
        generation_done.set()

    thread = threading.Thread(target=generate)
    thread.start()
    time.sleep(0.5)  # the generation is under way
    for _ in range(3):
        resp = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL_NAME, "input": TEXTS})
        assert resp.status_code == 200
    assert not generation_done.is_set()  # embeddings came back while it was still running
    thread.join()
