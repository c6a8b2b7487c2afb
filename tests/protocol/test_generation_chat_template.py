from __future__ import annotations

from pathlib import Path

import pytest
from protocol_fakes import CHATML, CharTokenizer

from protocol.converter import structure
from protocol.generation.chat_template import (
    compile_template,
    content_format,
    load_chat_template,
    render_chat,
    resolve_template,
)
from protocol.http import HTTPError
from protocol.openai.chat_schemas import ChatMessageParam

SYSTEM = (
    "<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)


def messages(*raw: dict) -> list[ChatMessageParam]:
    return structure(list(raw), list[ChatMessageParam])


def render(template: str, msgs: list[ChatMessageParam], **kwargs: object) -> str:
    kwargs.setdefault("add_generation_prompt", True)
    return render_chat(template, msgs, tokenizer=CharTokenizer(), **kwargs)  # type: ignore[arg-type]


def render_error(template: str, msgs: list[ChatMessageParam] | None = None) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        render(template, msgs or messages({"role": "user", "content": "hi"}))
    assert info.value.status == 400 and info.value.err_type == "BadRequestError"
    return info.value


def test_chatml_adds_default_system_prompt_and_generation_prompt() -> None:
    out = render(CHATML, messages({"role": "user", "content": "Hi"}))
    assert out == SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_keeps_the_clients_system_prompt() -> None:
    msgs = messages({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"})
    out = render(CHATML, msgs, add_generation_prompt=False)
    assert out == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_text_parts_are_joined_with_newlines_for_string_templates() -> None:
    msgs = messages(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    )
    assert "<|im_start|>user\na\nb<|im_end|>" in render(CHATML, msgs)


def test_non_text_parts_are_rejected_with_their_path() -> None:
    msgs = messages(
        {"role": "user", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
    )
    err = render_error(CHATML, msgs)
    assert "'image_url'" in err.message and err.param == "messages[1].content[1]"


def test_templates_that_loop_over_content_get_the_parts() -> None:
    template = (
        "{% for m in messages %}{% for p in m['content'] %}[{{ p.text }}]{% endfor %}{% endfor %}"
    )
    assert content_format(template) == "openai"
    msgs = messages(
        {"role": "user", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    )
    assert render(template, msgs) == "[s][a][b]"


def test_content_loop_through_a_variable_is_detected() -> None:
    template = (
        "{% for m in messages %}{% set c = m.content %}{% for p in c %}{% endfor %}{% endfor %}"
    )
    assert content_format(template) == "openai"
    assert content_format(CHATML) == "string"


def test_missing_content_renders_as_empty_string() -> None:
    msgs = messages({"role": "assistant", "tool_calls": [{"id": "1"}]})
    out = render("{{ messages[0].content }}|{{ messages[0].tool_calls[0].id }}", msgs)
    assert out == "|1"


def test_hf_globals_filters_and_extensions_are_available() -> None:
    template = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m.role }}{% endfor %}"
        "|{{ {'k': 'é'} | tojson }}|{{ strftime_now('%Y') | length }}"
        "|{{ bos_token }}{{ eos_token }}"
        "|{% generation %}gen{% endgeneration %}"
    )
    msgs = messages({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"})
    assert render(template, msgs) == 'user|{"k": "é"}|4|<s></s>|gen'


def test_chat_template_kwargs_reach_the_template_but_cannot_replace_messages() -> None:
    template = "{{ enable_thinking }}|{{ messages | length }}|{{ add_generation_prompt }}"
    msgs = messages({"role": "user", "content": "a"})
    kwargs = {"enable_thinking": False, "messages": [], "add_generation_prompt": False}
    assert render(template, msgs, chat_template_kwargs=kwargs) == "False|1|True"


def test_trim_and_lstrip_blocks_match_transformers() -> None:
    template = "{% for m in messages %}\n    {{ m.content }}\n{% endfor %}"
    assert render(template, messages({"role": "user", "content": "a"})) == "    a\n"


def test_raise_exception_is_a_400_with_its_message() -> None:
    err = render_error("{{ raise_exception('Roles must alternate') }}")
    assert "Roles must alternate" in err.message


@pytest.mark.parametrize(
    "template",
    [
        "{% for %}",
        "{{ messages.pop() }}",
        "{{ 'a' + none }}",
        "{{ messages[5]['x'] + 'a' }}",
        # regressions: these two were 500s
        "{{ 1 / 0 }}",
        "{% for i in range(10 ** 12) %}{% endfor %}",
    ],
    ids=["syntax", "sandbox", "type-error", "undefined", "zero-division", "sandbox-range"],
)
def test_template_failures_are_400s(template: str) -> None:
    assert render_error(template).message.startswith("Chat template error")


def test_templates_are_compiled_once() -> None:
    assert compile_template(CHATML) is compile_template(CHATML)


def test_a_trusted_request_template_wins_and_none_at_all_is_a_400() -> None:
    def req(template: str | None = None, kwargs: dict | None = None) -> object:
        return type("Req", (), {"chat_template": template, "chat_template_kwargs": kwargs})()

    assert resolve_template(req("req"), "model", True) == ("req", True)
    assert resolve_template(req(kwargs={"chat_template": "kw"}), "model", True) == ("kw", True)
    assert resolve_template(req(), "model", False) == ("model", False)
    for untrusted in (req("req"), req(kwargs={"chat_template": "kw"})):
        with pytest.raises(HTTPError) as info:
            resolve_template(untrusted, "model", False)
        assert info.value.status == 400 and "--trust-request-chat-template" in info.value.message
    with pytest.raises(HTTPError) as info:
        resolve_template(req(), None, True)
    assert info.value.status == 400 and "chat template" in info.value.message


def test_load_chat_template_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(CHATML, encoding="utf-8")
    assert load_chat_template(str(path)) == CHATML


def test_load_chat_template_decodes_escaped_newlines_in_inline_templates() -> None:
    assert load_chat_template("{{ 'é' }}\\n{{ x }}") == "{{ 'é' }}\n{{ x }}"


def test_load_chat_template_rejects_a_missing_path() -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_chat_template("/nonexistent/template.jinja")
