"""Prompts → token ids: the four completion prompt shapes, and the checks vLLM applies to them."""

from __future__ import annotations

from typing import Any

from protocol.http import HTTPError

EMPTY_PROMPT_MESSAGE = "Either prompt or prompt_embeds must be provided and non-empty."


def encode(
    tokenizer: Any, text: str, add_special_tokens: bool, max_chars: int, param: str = "prompt"
) -> list[int]:
    check_prompt_chars(text, max_chars, param)
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def check_prompt_chars(text: str, max_chars: int, param: str = "prompt") -> None:
    """Before tokenizing: a text this long could not fit the context anyway, and tokenizing it
    would take seconds (Settings.prompt_chars)."""
    if len(text) > max_chars:
        raise HTTPError(
            400,
            f"The prompt has {len(text)} characters; this server tokenizes at most {max_chars} "
            "per prompt (max_prompt_chars).",
            "BadRequestError",
            param,
        )


def check_token_ids(token_ids: list[int], vocab_size: int, param: str = "prompt") -> None:
    # Negative ids are already rejected by the schema hooks; only the upper bound is model-specific.
    if token_ids and max(token_ids) >= vocab_size:
        raise HTTPError(
            400,
            f"Token id {max(token_ids)} is out of vocabulary (vocabulary size: {vocab_size}).",
            "BadRequestError",
            param,
        )


def count_prompts(prompt: str | list[Any] | None) -> int:
    """How many prompts a completion request holds (without reading them)."""
    if not prompt or isinstance(prompt, str) or isinstance(prompt[0], int):
        return 1
    return len(prompt)


def completion_prompts(
    prompt: str | list[Any] | None,
    tokenizer: Any,
    add_special_tokens: bool,
    vocab_size: int,
    max_chars: int,
) -> tuple[list[list[int]], list[str | None]]:
    """Token ids of each prompt, plus its text where the client sent text (for echo).

    A string or a flat list of ids is one prompt; a list of strings or of id lists is several.
    """
    if prompt is None or len(prompt) == 0:
        raise HTTPError(400, EMPTY_PROMPT_MESSAGE, "BadRequestError", "prompt")
    items: list[Any]
    if isinstance(prompt, str) or isinstance(prompt[0], int):
        items = [prompt]
    else:
        items = list(prompt)

    token_ids: list[list[int]] = []
    texts: list[str | None] = []
    for item in items:
        if isinstance(item, str):
            ids = encode(tokenizer, item, add_special_tokens, max_chars)
            texts.append(item)
        else:
            ids = list(item)
            texts.append(None)
        if not ids:
            raise HTTPError(400, EMPTY_PROMPT_MESSAGE, "BadRequestError", "prompt")
        check_token_ids(ids, vocab_size)
        token_ids.append(ids)
    return token_ids, texts
