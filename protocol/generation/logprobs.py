"""Engine logprobs → the JSON shapes of the completions and chat APIs (and vLLM's
prompt_logprobs). -inf (a token the sampling filters removed) becomes -9999.0, as in vLLM:
JSON has no infinity."""

from __future__ import annotations

from typing import Any

from engine.outputs import TokenLogprobs

_FLOOR = -9999.0


def _clamp(logprob: float) -> float:
    return max(logprob, _FLOOR)


def _text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def completion_logprobs(
    entries: list[TokenLogprobs | None], tokenizer: Any, text_offset: int = 0
) -> dict[str, Any]:
    """{tokens, token_logprobs, top_logprobs, text_offset}; a None entry (the first prompt
    token with echo) has a null logprob and no alternatives."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for entry in entries:
        if entry is None:
            continue
        text = _text(tokenizer, entry.token_id)
        tokens.append(text)
        offsets.append(text_offset)
        text_offset += len(text)
        token_logprobs.append(_clamp(entry.logprob))
        top = {_text(tokenizer, t): _clamp(lp) for t, lp in entry.top}
        top.setdefault(text, _clamp(entry.logprob))
        top_logprobs.append(top)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def with_first_prompt_token(
    prompt_ids: list[int], entries: list[TokenLogprobs | None], tokenizer: Any
) -> dict[str, Any]:
    """Echoed prompt logprobs: like completion_logprobs, with the first prompt token listed
    with a null logprob (nothing predicts it)."""
    rest = completion_logprobs(entries[1:], tokenizer, len(_text(tokenizer, prompt_ids[0])))
    return {
        "tokens": [_text(tokenizer, prompt_ids[0]), *rest["tokens"]],
        "token_logprobs": [None, *rest["token_logprobs"]],
        "top_logprobs": [None, *rest["top_logprobs"]],
        "text_offset": [0, *rest["text_offset"]],
    }


def merge_completion_logprobs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """`second` continues `first` (output after echoed prompt): offsets shift by its text."""
    shift = (first["text_offset"][-1] + len(first["tokens"][-1])) if first["tokens"] else 0
    return {
        "tokens": first["tokens"] + second["tokens"],
        "token_logprobs": first["token_logprobs"] + second["token_logprobs"],
        "top_logprobs": first["top_logprobs"] + second["top_logprobs"],
        "text_offset": first["text_offset"] + [o + shift for o in second["text_offset"]],
    }


def _chat_token(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = _text(tokenizer, token_id)
    return {"token": text, "logprob": _clamp(logprob), "bytes": list(text.encode())}


def chat_logprobs(entries: list[TokenLogprobs], tokenizer: Any) -> dict[str, Any]:
    """{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}"""
    return {
        "content": [
            {
                **_chat_token(tokenizer, e.token_id, e.logprob),
                "top_logprobs": [_chat_token(tokenizer, t, lp) for t, lp in e.top],
            }
            for e in entries
        ]
    }


def prompt_logprobs_json(
    entries: list[TokenLogprobs | None] | None, tokenizer: Any
) -> list[dict[str, Any] | None] | None:
    """vLLM's prompt_logprobs: per prompt token, null for the first, else {token id: {logprob,
    rank, decoded_token}} for the token itself and the most likely ones."""
    if entries is None:
        return None
    result: list[dict[str, Any] | None] = []
    for entry in entries:
        if entry is None:
            result.append(None)
            continue
        ranked = {
            str(t): {"logprob": _clamp(lp), "rank": rank, "decoded_token": _text(tokenizer, t)}
            for rank, (t, lp) in enumerate(entry.top, start=1)
        }
        ranked.setdefault(
            str(entry.token_id),
            {
                "logprob": _clamp(entry.logprob),
                "rank": entry.rank,
                "decoded_token": _text(tokenizer, entry.token_id),
            },
        )
        result.append(ranked)
    return result
