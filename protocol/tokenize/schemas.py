"""POST /tokenize (completion form and chat form) and POST /detokenize."""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import TOKEN_ID, documented
from protocol.openai.chat_schemas import ChatMessageParam, ChatTool


@attrs.frozen(kw_only=True)
class TokenizeCompletionRequest:
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


@attrs.frozen(kw_only=True)
class TokenizeChatRequest:
    """Chosen when the body has `messages`; defaults differ from the completion form (vLLM's)."""

    model: str | None = None
    messages: list[ChatMessageParam]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ChatTool] | None = None  # so a client can count the tokens tools cost
    documents: list[dict[str, str]] | None = None


@attrs.frozen(kw_only=True)
class TokenizeResponse:
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


@attrs.frozen(kw_only=True)
class DetokenizeRequest:
    model: str | None = None
    tokens: list[int] = documented(attrs.NOTHING, items=TOKEN_ID)


@attrs.frozen
class DetokenizeResponse:
    prompt: str
