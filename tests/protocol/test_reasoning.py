"""Reasoning parsers: the model's thinking goes to `reasoning`, its answer to `content`, in whole
responses and streamed deltas alike (the scripted engine writes one character per step, so
every tag arrives split across pieces)."""

from __future__ import annotations

import orjson
import pytest
from protocol_fakes import (
    CHATML,
    CharTokenizer,
    ScriptedEngine,
    make_request,
    read_events,
    server_with,
)

from protocol.generation.reasoning_parsers import ThinkingParser, split_reasoning, thinking_on
from protocol.http import Response
from protocol.openai.chat import create_chat_completion

# Qwen3's way: the generation prompt of a turn with thinking off holds an empty think block.
QWEN3_TEMPLATE = CHATML.replace(
    "{{ '<|im_start|>assistant\\n' }}",
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}",
)
USER = [{"role": "user", "content": "2 + 2?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("output", "thinking", "expected"),
    [
        ("Add them.</think>\n\n4", True, ("Add them.", "\n\n4")),
        ("<think>Add them.</think>4", True, ("Add them.", "4")),  # the model opened the block
        ("Still adding", True, ("Still adding", "")),  # cut short: all thinking
        ("</think>4", True, (None, "4")),  # an empty thought
        ("4 <think> is a tag", False, (None, "4 <think> is a tag")),  # thinking off
        ("a < b </thin", True, ("a < b </thin", "")),  # a tag's start, never finished
    ],
)
def test_whole_and_piece_by_piece_outputs_split_alike(output, thinking, expected) -> None:
    assert split_reasoning(ThinkingParser(thinking), output) == expected
    parser, reasoning, content = ThinkingParser(thinking), [], []
    for char in output:
        piece = parser.feed(char)
        reasoning.append(piece.reasoning)
        content.append(piece.content)
    rest = parser.finish()
    assert ("".join(reasoning) + rest.reasoning or None, "".join(content) + rest.content) == (
        expected
    )


def test_a_tag_split_across_pieces_is_held_back_until_it_is_known() -> None:
    parser = ThinkingParser(thinking=True)
    assert parser.feed("sum</thi").reasoning == "sum"
    piece = parser.feed("nk>four")
    assert (piece.reasoning, piece.content, parser.thinking) == ("", "four", False)


@pytest.mark.parametrize(
    ("parser", "prompt", "kwargs", "on"),
    [
        ("qwen3", "<|im_start|>assistant\n", {}, True),
        ("qwen3", "<|im_start|>assistant\n<think>\n\n</think>\n\n", {}, False),
        ("qwen3", "<|im_start|>assistant\n", {"enable_thinking": False}, False),
        ("deepseek_r1", "<｜Assistant｜><think>\n", {}, True),
        ("deepseek_r1", "<｜Assistant｜>", {"enable_thinking": False}, True),
        # an earlier turn's closed block does not turn this one's thinking off
        ("qwen3", "<think>a</think>b<|im_start|>assistant\n<think>\n", {}, True),
    ],
)
def test_thinking_is_on_unless_the_prompt_or_the_request_turns_it_off(
    parser, prompt, kwargs, on
) -> None:
    assert thinking_on(parser, prompt, kwargs) is on


def engine_replying(reply: str, **kwargs: object) -> ScriptedEngine:
    kwargs.setdefault("chat_template", QWEN3_TEMPLATE)
    kwargs.setdefault("reasoning_parser", "qwen3")
    return ScriptedEngine(reply=lambda i: reply, max_model_len=2048, **kwargs)  # type: ignore[arg-type]


async def chat(engine: ScriptedEngine, body: dict) -> dict | list:
    response = await create_chat_completion(
        make_request({"messages": USER, **body}, server=server_with(engine), request_id="r")
    )
    if isinstance(response, Response):
        return orjson.loads(response.body)
    return await read_events(response)


@pytest.mark.anyio
async def test_a_reply_is_split_into_reasoning_and_content() -> None:
    body = await chat(engine_replying("Two and two.</think>\n\nIt is 4."), {})
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == ("Two and two.", "\n\nIt is 4.")
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.anyio
async def test_streamed_deltas_carry_reasoning_then_content() -> None:
    events = await chat(engine_replying("Two and two.</think>It is 4."), {"stream": True})
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    reasoning = "".join(d.get("reasoning") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert (reasoning, content) == ("Two and two.", "It is 4.")
    last_reasoning = max(i for i, d in enumerate(deltas) if d.get("reasoning"))
    first_content = min(i for i, d in enumerate(deltas) if d.get("content"))
    assert last_reasoning < first_content
    assert events[-1] == "[DONE]"


@pytest.mark.anyio
async def test_enable_thinking_false_makes_the_whole_reply_content() -> None:
    engine = engine_replying("It is 4.")
    body = await chat(engine, {"chat_template_kwargs": {"enable_thinking": False}})
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (None, "It is 4.")
    ((prompt_ids, _),) = engine.calls[0][1]
    assert engine.tokenizer.decode(prompt_ids).endswith("<think>\n\n</think>\n\n")


@pytest.mark.anyio
async def test_a_reply_cut_short_while_thinking_is_all_reasoning() -> None:
    body = await chat(engine_replying("Two and two make"), {"max_tokens": 8})
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == ("Two and ", None)
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_are_read_from_the_answer_after_the_thinking(stream: bool) -> None:
    reply = (
        'Need weather.</think>Checking.<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    result = await chat(engine_replying(reply), {"tools": [WEATHER], "stream": stream})
    if stream:
        deltas = [e["choices"][0] for e in result[:-1] if e["choices"]]
        reasoning = "".join(c["delta"].get("reasoning") or "" for c in deltas)
        content = "".join(c["delta"].get("content") or "" for c in deltas)
        calls = [t for c in deltas for t in c["delta"].get("tool_calls") or []]
        arguments = "".join(t["function"].get("arguments") or "" for t in calls)
        name, finish = calls[0]["function"]["name"], deltas[-1]["finish_reason"]
    else:
        choice = result["choices"][0]
        reasoning, content = choice["message"]["reasoning"], choice["message"]["content"]
        (call,) = choice["message"]["tool_calls"]
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        finish = choice["finish_reason"]
    assert (reasoning, content, name) == ("Need weather.", "Checking.", "get_weather")
    assert orjson.loads(arguments) == {"city": "Oslo"}
    assert finish == "tool_calls"


@pytest.mark.anyio
async def test_include_reasoning_false_leaves_the_thinking_out() -> None:
    body = await chat(engine_replying("Two and two.</think>It is 4."), {"include_reasoning": False})
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (None, "It is 4.")
    events = await chat(
        engine_replying("Two and two.</think>It is 4."),
        {"stream": True, "include_reasoning": False},
    )
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert not any("reasoning" in d for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "It is 4."


@pytest.mark.anyio
async def test_without_a_reasoning_parser_the_tags_stay_in_the_content() -> None:
    body = await chat(engine_replying("Two.</think>4", reasoning_parser=None), {})
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (None, "Two.</think>4")


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_an_earlier_turns_thinking_reaches_the_template_under_both_names(field) -> None:
    template = (
        "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}"
        "[{{ m.get('reasoning_content', '') }}|{{ m.get('reasoning', '') }}]{% endfor %}"
    )
    engine = engine_replying("</think>ok", chat_template=template)
    history = [*USER, {"role": "assistant", "content": "4", field: "two and two"}, *USER]
    await chat(engine, {"messages": history})
    ((prompt_ids, _),) = engine.calls[0][1]
    assert "assistant:4[two and two|two and two]" in engine.tokenizer.decode(prompt_ids)


class ThinkTokenizer(CharTokenizer):
    """Characters, except that `</think>` is one token (as in Qwen3's vocabulary)."""

    END_ID = 300

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        head, tag, tail = text.partition("</think>")
        if not tag:
            return super().encode(text, add_special_tokens)
        return [
            *super().encode(head, add_special_tokens),
            self.END_ID,
            *super().encode(tail, add_special_tokens=False),
        ]


@pytest.mark.anyio
@pytest.mark.parametrize(("thinking", "after"), [(True, ThinkTokenizer.END_ID), (False, None)])
async def test_a_constraint_applies_to_the_answer_after_the_thinking(thinking, after) -> None:
    """With thinking on, the structured-output grammar waits for `</think>` where the
    vocabulary has it as one token; with thinking off it rules from the first token."""
    engine = engine_replying("</think>42", vocab_size=512)
    engine.tokenizer = ThinkTokenizer()
    body = {
        "structured_outputs": {"regex": "[0-9]+"},
        "chat_template_kwargs": {"enable_thinking": thinking},
    }
    await chat(engine, body)
    ((_, params),) = engine.calls[0][1]
    assert params.grammar is not None and params.grammar_after_token_id == after
