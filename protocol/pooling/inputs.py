"""Pooling inputs → token ids: the input shapes, chat messages, truncation and length checks
that /v1/embeddings, /pooling, /classify, /score, /rerank and /v2/embed share."""

from __future__ import annotations

from typing import Any

from configs.settings import Settings
from observability.request_log import current_record
from protocol.generation.chat_template import render_request
from protocol.generation.prompts import check_token_ids
from protocol.http import bad_request
from protocol.pooling.schemas import PoolingInputRequest
from protocol.served_model import ServedModel

EMPTY_INPUT_MESSAGE = "Input cannot be empty."


def check_choice(value: str, choices: tuple[str, ...], param: str) -> None:
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise bad_request(f"{param} should be {expected}, got {value!r} (literal_error)", param)


def truncation_length(truncate_prompt_tokens: int | None, max_model_len: int) -> int | None:
    """Tokens to keep per input (None: no truncation), with vLLM's checks."""
    if truncate_prompt_tokens is None:
        return None
    if truncate_prompt_tokens < -1 or truncate_prompt_tokens == 0:
        raise bad_request(
            "truncate_prompt_tokens must be -1 (the model's maximum) or a positive number.",
            "truncate_prompt_tokens",
        )
    if truncate_prompt_tokens > max_model_len:
        raise bad_request(
            "truncate_prompt_tokens value is greater than max_model_len. "
            "Please request a smaller truncation size.",
            "truncate_prompt_tokens",
        )
    return max_model_len if truncate_prompt_tokens == -1 else truncate_prompt_tokens


def check_length(num_tokens: int, max_model_len: int) -> None:
    if num_tokens > max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested 0 output tokens and your prompt contains {num_tokens} input tokens, for "
            f"a total of {num_tokens} tokens. Please reduce the length of the input prompt or "
            "the number of requested output tokens.",
            "input_tokens",
        )


def keep_tokens(token_ids: list[int], keep: int | None, tokenizer: Any) -> list[int]:
    """Truncates token ids on the tokenizer's side ("right" keeps the start)."""
    if keep is None or len(token_ids) <= keep:
        return token_ids
    if getattr(tokenizer, "truncation_side", "right") == "left":
        return token_ids[-keep:]
    return token_ids[:keep]


def encode_texts(
    served: ServedModel,
    texts: list[str],
    add_special_tokens: bool,
    keep: int | None,
    *,
    enforce_max_len: bool = True,
) -> list[list[int]]:
    """Tokenizes each text (truncated to `keep` tokens, special tokens kept) and checks its
    length against the model's maximum (unless the caller truncates afterwards)."""
    if not texts or any(not t for t in texts):
        raise bad_request(EMPTY_INPUT_MESSAGE, "input")
    options: dict[str, Any] = {"add_special_tokens": add_special_tokens}
    if keep is not None:
        options.update(truncation=True, max_length=keep)
    token_ids = [list(ids) for ids in served.tokenizer(texts, **options)["input_ids"]]
    # Text can tokenize to nothing (whitespace, without special tokens): a model cannot run
    # on zero tokens.
    if any(not ids for ids in token_ids):
        raise bad_request(EMPTY_INPUT_MESSAGE, "input")
    if enforce_max_len:
        for ids in token_ids:
            check_length(len(ids), served.max_model_len)
    return token_ids


def request_token_ids(
    served: ServedModel, req: PoolingInputRequest, settings: Settings
) -> list[list[int]]:
    """The token ids of every input of an embeddings, pooling or classify request."""
    if (req.input is None) == (req.messages is None):
        raise bad_request("Send exactly one of `input` and `messages`.", "input")
    keep = truncation_length(req.truncate_prompt_tokens, served.max_model_len)
    if req.messages is not None:
        if not req.messages:
            raise bad_request(EMPTY_INPUT_MESSAGE, "messages")
        text = render_request(req, served, settings)
        add_special = bool(req.add_special_tokens)  # default False for chat
        return encode_texts(served, [text], add_special, keep)
    add_special = req.add_special_tokens is not False  # default True for plain input
    items = req.input
    if isinstance(items, str):
        return encode_texts(served, [items], add_special, keep)
    if not items:
        raise bad_request(EMPTY_INPUT_MESSAGE, "input")
    if isinstance(items[0], str):
        return encode_texts(served, list(items), add_special, keep)
    id_lists = [items] if isinstance(items[0], int) else list(items)
    result = []
    for ids in id_lists:
        if not ids:
            raise bad_request(EMPTY_INPUT_MESSAGE, "input")
        check_token_ids(list(ids), served.vocab_size, "input")
        ids = keep_tokens(list(ids), keep, served.tokenizer)
        check_length(len(ids), served.max_model_len)
        result.append(ids)
    return result


async def pooled_vectors(
    served: ServedModel, inputs: list[list[int]], token_type_ids: list[list[int]] | None = None
) -> Any:
    """The engine's pooled vectors [len(inputs), dim], their tokens noted on the request's log
    line (when request logging is on)."""
    vectors = await served.engine.encode(inputs, token_type_ids)
    record = current_record()
    if record is not None:
        record.note_prompt_tokens(sum(len(ids) for ids in inputs))
    return vectors
