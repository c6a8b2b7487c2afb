"""Routing keys for a request: hashes of its prompt's successive prefixes.

The prompt is read from the body as each API holds it (chat and Anthropic `messages`, the
Responses API's `instructions` + `input`, completions' `prompt`), after the model's name, as
one canonical text; every CHUNK_CHARS characters end a prefix, and its key chains the previous
key with the chunk. Two requests that share a conversation's start (a system prompt, earlier
turns) share their first keys, so the router can send the second where the first went: that
replica's prefix cache holds those tokens. The key is blake2b, not hash(): it must not change
with the process's hash seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

CHUNK_CHARS = 128  # about 32 tokens of English
MAX_KEYS = 256  # the first 32k characters decide


def prompt_text(body: bytes) -> str | None:
    """The request's model and prompt as one text; None when the body holds no prompt."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    parts: list[Any] = [data.get("model")]
    for field in ("system", "instructions", "messages", "input", "prompt"):
        if field in data:
            parts.append(data[field])
    if len(parts) == 1:
        return None
    # Messages one by one, so each turn's text begins where the previous turn's ended.
    pieces = []
    for part in parts:
        items = part if isinstance(part, list) else [part]
        for item in items:
            pieces.append(item if isinstance(item, str) else _canonical(item))
    return "\n".join(pieces)


def _canonical(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def prefix_keys(body: bytes) -> tuple[int, ...]:
    """One key per whole CHUNK_CHARS-long prefix of the prompt text, shortest first."""
    text = prompt_text(body)
    if text is None:
        return ()
    keys = []
    previous = b""
    for end in range(CHUNK_CHARS, min(len(text), CHUNK_CHARS * MAX_KEYS) + 1, CHUNK_CHARS):
        chunk = text[end - CHUNK_CHARS : end].encode()
        digest = hashlib.blake2b(previous + chunk, digest_size=8).digest()
        keys.append(int.from_bytes(digest, "big"))
        previous = digest
    return tuple(keys)
