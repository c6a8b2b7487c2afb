"""Logprobs, the extra sampling fields and structured outputs against the real server (fp32),
through the official openai client where it has the field and plain JSON where it does not."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from tests.e2e.server import MODEL_NAME

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name a color."}]


def test_completion_logprobs_shape(client):
    resp = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3
    )
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == resp.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and len(top) >= 3
        # Greedy: the chosen token is the most likely one.
        assert math.isclose(max(top.values()), logprob, abs_tol=1e-5) and token in top


def test_completion_echo_lists_prompt_logprobs_first(client, http):
    resp = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=1, echo=True
    )
    choice = resp.choices[0]
    num_prompt = resp.usage.prompt_tokens
    lp = choice.logprobs
    assert choice.text.startswith(PROMPT)
    assert len(lp.tokens) == num_prompt + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == choice.text
    # prompt_logprobs (vLLM's extra) and return_token_ids in the same shapes vLLM uses.
    raw = http.post(
        "/v1/completions",
        json={
            "model": MODEL_NAME,
            "prompt": PROMPT,
            "max_tokens": 2,
            "temperature": 0,
            "prompt_logprobs": 2,
            "return_token_ids": True,
        },
    ).json()["choices"][0]
    assert raw["prompt_logprobs"][0] is None and len(raw["prompt_logprobs"]) == num_prompt
    for token_id, entry in zip(
        raw["prompt_token_ids"][1:], raw["prompt_logprobs"][1:], strict=True
    ):
        assert str(token_id) in entry and {"logprob", "rank", "decoded_token"} <= set(
            entry[str(token_id)]
        )
    assert math.isclose(
        raw["prompt_logprobs"][1][str(raw["prompt_token_ids"][1])]["logprob"],
        lp.token_logprobs[1],
        abs_tol=1e-4,
    )
    assert len(raw["token_ids"]) == 2


def test_chat_logprobs_shape_and_stream(client):
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens == 6
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.bytes == list(item.token.encode())
        assert math.isclose(item.top_logprobs[0].logprob, item.logprob, abs_tol=1e-5)
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=CHAT,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    streamed = [
        item
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None
        for item in choice.logprobs.content
    ]
    assert [i.token for i in streamed] == [i.token for i in content]
    assert [i.logprob for i in streamed] == pytest.approx([i.logprob for i in content], abs=1e-5)


def test_sampled_logprobs_are_of_the_filtered_distribution(client):
    """With top_k=2 every alternative outside the two kept tokens has -inf, sent as -9999.0."""
    resp = client.chat.completions.create(
        model=MODEL_NAME,
        messages=CHAT,
        max_tokens=4,
        temperature=1.0,
        seed=7,
        logprobs=True,
        top_logprobs=3,
        extra_body={"top_k": 2},
    )
    for item in resp.choices[0].logprobs.content:
        probs = [math.exp(t.logprob) for t in item.top_logprobs[:2]]
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-4)
        assert item.top_logprobs[2].logprob == -9999.0


def test_too_many_logprobs_is_a_400_even_in_a_stream(http):
    for stream in (False, True):
        resp = http.post(
            "/v1/chat/completions",
            json={"messages": CHAT, "logprobs": True, "top_logprobs": 21, "stream": stream},
        )
        assert resp.status_code == 400 and "max allowed: 20" in resp.json()["error"]["message"]


def test_logit_bias_allowed_tokens_bad_words_and_min_tokens(client, http, smollm2_tokenizer):
    banana = smollm2_tokenizer.encode(" banana")[0]
    biased = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=3, temperature=0, logit_bias={banana: 100}
    )
    assert biased.choices[0].text == " banana banana banana"
    allowed = smollm2_tokenizer.encode(" yes no")
    only = http.post(
        "/v1/completions",
        json={
            "prompt": PROMPT,
            "max_tokens": 4,
            "temperature": 0,
            "allowed_token_ids": allowed,
            "return_token_ids": True,
        },
    ).json()["choices"][0]
    assert set(only["token_ids"]) <= set(allowed)
    plain = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0)
    first_word = plain.choices[0].text.split()[0]
    banned = http.post(
        "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "bad_words": [first_word]},
    ).json()["choices"][0]["text"]
    assert first_word not in banned.split()
    at_least = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 30,
            "temperature": 0,
            "min_tokens": 20,
        },
    ).json()
    assert at_least["usage"]["completion_tokens"] >= 20


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "population": {"type": "integer"},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_json_schema_output_validates(client, stream):
    kwargs = dict(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Give me a city and its population as JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
    )
    if stream:
        chunks = client.chat.completions.create(stream=True, **kwargs)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(**kwargs).choices[0].message.content
    jsonschema.validate(json.loads(text), SCHEMA)


def test_regex_choice_grammar_and_json_object(client, http):
    regex = r"[0-9]{3}-[0-9]{4}"
    text = (
        client.completions.create(
            model=MODEL_NAME,
            prompt="Call me at",
            max_tokens=12,
            temperature=0,
            extra_body={"structured_outputs": {"regex": regex}},
        )
        .choices[0]
        .text
    )
    assert re.fullmatch(regex, text), text
    choice = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Is the sky blue?"}],
            "temperature": 0,
            "guided_choice": ["yes", "no"],
        },
    ).json()["choices"][0]["message"]["content"]
    assert choice in ("yes", "no")
    lark = 'start: "The answer is " NUMBER "."\nNUMBER: /[0-9]+/'
    answer = http.post(
        "/v1/completions",
        json={"prompt": "2 + 2 = ?", "max_tokens": 12, "temperature": 0, "guided_grammar": lark},
    ).json()["choices"][0]["text"]
    assert re.fullmatch(r"The answer is [0-9]+\.", answer), answer
    gbnf = 'root ::= "yes" | "no"'  # the form vLLM documents
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        temperature=0,
        extra_body={"structured_outputs": {"grammar": gbnf}},
    )
    assert reply.choices[0].message.content in ("yes", "no")
    obj = client.chat.completions.create(
        model=MODEL_NAME,
        messages=CHAT,
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_object"},
    )
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_invalid_structured_outputs_are_400_before_generation(http):
    for body, param in (
        ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs.regex"),
        ({"guided_json": {"type": "nope"}}, "guided_json"),
        ({"guided_grammar": "start: undefined_rule"}, "guided_grammar"),
        ({"structured_outputs": {"grammar": 'root ::= ("yes"'}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"grammar": 'item ::= "a"'}}, "structured_outputs.grammar"),
        ({"guided_grammar": ""}, "guided_grammar"),
        ({"guided_choice": []}, "guided_choice"),
    ):
        resp = http.post("/v1/completions", json={"prompt": "x", "stream": True, **body})
        assert resp.status_code == 400, body
        assert resp.json()["error"]["param"] == param


def test_completion_stream_logprobs_match_the_response(client):
    kwargs = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    whole = client.completions.create(**kwargs).choices[0].logprobs
    tokens, offsets = [], []
    for chunk in client.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens
                offsets += choice.logprobs.text_offset
    assert tokens == whole.tokens and offsets == whole.text_offset


def test_generative_scoring_gives_the_next_token_probability_prompt_logprobs_give(http):
    query, items = "Is Paris in France? Answer:", [" Yes.", " Maybe."]
    label_ids = [
        http.post("/tokenize", json={"prompt": w}).json()["tokens"][0] for w in (" yes", " no")
    ]
    body = {"query": query, "items": items, "label_token_ids": label_ids}
    own = http.post("/generative_scoring", json={**body, "apply_softmax": False}).json()
    normalised = http.post("/generative_scoring", json=body).json()
    query_ids = http.post("/tokenize", json={"prompt": query}).json()["tokens"]
    for index, item in enumerate(items):
        item_ids = http.post("/tokenize", json={"prompt": item, "add_special_tokens": False})
        prompt = query_ids + item_ids.json()["tokens"]
        # The same position scored by the prefill path: the label's logprob as a prompt token.
        probabilities = []
        for label in label_ids:
            raw = http.post(
                "/v1/completions",
                json={"prompt": prompt + [label], "max_tokens": 1, "prompt_logprobs": 0},
            ).json()["choices"][0]
            probabilities.append(math.exp(raw["prompt_logprobs"][-1][str(label)]["logprob"]))
        assert own["data"][index]["score"] == pytest.approx(probabilities[0], rel=1e-3)
        expected = probabilities[0] / sum(probabilities)
        assert normalised["data"][index]["score"] == pytest.approx(expected, rel=1e-3)
    assert own["usage"]["completion_tokens"] == len(items)
