"""The official openai client against a real server: chat and completions, streaming and not."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.server import MODEL_NAME

pytestmark = pytest.mark.e2e


def test_chat_answers_the_readme_example(client):
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Hello!"}], max_tokens=32
    )
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == MODEL_NAME
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_stream_matches_non_stream_with_role_first_and_usage_last(client):
    kwargs = dict(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=24,
        temperature=0,
    )
    full = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content


def test_chat_content_as_list_of_text_parts(client):
    parts = [{"type": "text", "text": "Say hi"}, {"type": "text", "text": "politely."}]
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": parts}], max_tokens=8
    )
    assert resp.choices[0].message.content


@pytest.mark.parametrize(
    ("prompt", "num_choices"),
    [
        ("The sky is", 1),
        (["The sky is", "Grass is"], 2),
        ([504, 3335, 314], 1),
        ([[504, 3335, 314], [504, 3335]], 2),
    ],
)
def test_completions_accept_every_prompt_form(client, prompt, num_choices):
    resp = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=5)
    assert resp.id.startswith("cmpl-")
    assert [c.index for c in resp.choices] == list(range(num_choices))
    assert all(c.finish_reason in ("stop", "length") for c in resp.choices)


def test_completions_default_max_tokens_is_16(client):
    resp = client.completions.create(
        model=MODEL_NAME,
        prompt="Count: 1, 2, 3,",
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 16
    assert resp.choices[0].finish_reason == "length"


def test_completion_stream_has_one_finish_per_choice(client):
    chunks = list(
        client.completions.create(
            model=MODEL_NAME,
            prompt=["One", "Two"],
            max_tokens=6,
            stream=True,
        )
    )
    finishes = sorted(c.choices[0].index for c in chunks if c.choices[0].finish_reason)
    assert finishes == [0, 1]


def test_stop_string_is_excluded_and_reported(client):
    prompt = "List the numbers: 1, 2, 3, 4, 5, 6, 7, 8"
    base = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=20, temperature=0)
    text = base.choices[0].text
    stop = text.strip().split()[2]  # a word the model will produce
    resp = client.completions.create(
        model=MODEL_NAME, prompt=prompt, max_tokens=20, temperature=0, stop=[stop]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert stop not in choice.text
    assert text.startswith(choice.text)
    assert choice.model_extra["stop_reason"] == stop
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL_NAME, prompt=prompt, max_tokens=20, temperature=0, stop=[stop], stream=True
        )
    )
    assert streamed == choice.text


def test_seed_reproducible_and_n_choices(client):
    kwargs = dict(
        model=MODEL_NAME, prompt="Once upon a time", max_tokens=12, temperature=1.0, n=3, seed=1234
    )
    first = client.completions.create(**kwargs)
    second = client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert len({c.text for c in first.choices}) > 1


def test_sampling_options_are_accepted(client):
    resp = client.completions.create(
        model=MODEL_NAME,
        prompt="The weather today",
        max_tokens=8,
        temperature=0.8,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=7,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.2, "stop_token_ids": [13]},
    )
    assert resp.choices[0].finish_reason in ("stop", "length")


def test_max_completion_tokens_limits_chat(client):
    resp = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert resp.usage.completion_tokens == 5
    assert resp.choices[0].finish_reason == "length"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["param"] == "model"


def test_per_request_chat_template_is_used(client, http):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    content = "Just these words"
    resp = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": content}],
        max_tokens=2,
        extra_body={"chat_template": template},
    )
    expected = http.post("/tokenize", json={"prompt": content, "add_special_tokens": False})
    assert resp.usage.prompt_tokens == expected.json()["count"]


def test_repeated_prompt_reports_cached_tokens_and_same_text(client):
    prompt = "Here is a long shared system context. " * 12 + "Now answer: what is 2+2?"
    first = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0)
    second = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= 64
    assert second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    assert second.choices[0].text == first.choices[0].text


def test_batch_chat_answers_each_conversation_as_a_chat_alone_would(client, http):
    conversations = [
        [{"role": "user", "content": "Name a fruit."}],
        [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What colour is the sky?"},
        ],
        [{"role": "user", "content": "Count to five."}],
    ]
    sampling = {"max_tokens": 12, "temperature": 0}
    resp = http.post(
        "/v1/chat/completions/batch",
        json={"model": MODEL_NAME, "messages": conversations, **sampling},
    )
    assert resp.status_code == 200, resp.text
    batch = openai.types.chat.ChatCompletion.model_validate(resp.json())
    assert [c.index for c in batch.choices] == [0, 1, 2]
    prompt_tokens = 0
    for conversation, choice in zip(conversations, batch.choices, strict=True):
        alone = client.chat.completions.create(model=MODEL_NAME, messages=conversation, **sampling)
        # Greedy decoding is batch-invariant: the same words, in or out of a batch.
        assert choice.message.content == alone.choices[0].message.content
        assert choice.finish_reason == alone.choices[0].finish_reason
        prompt_tokens += alone.usage.prompt_tokens
    assert batch.usage.prompt_tokens == prompt_tokens
    refused = http.post(
        "/v1/chat/completions/batch", json={"messages": conversations, "stream": True}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"
