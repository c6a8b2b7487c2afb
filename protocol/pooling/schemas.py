"""POST /v1/embeddings, /pooling, /classify and /v2/embed (Cohere): requests and responses.

Inputs come in two forms, told apart by the presence of `messages` (as in vLLM): `input`
(a string, strings, token ids or lists of token ids) or chat `messages`, rendered by the model's
chat template (pooling defaults: no generation prompt, no special tokens added).
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.bounds import documented
from protocol.generation.request_schemas import Prompt, UsageInfo
from protocol.openai.chat_schemas import ChatMessageParam

ENCODING_FORMATS = ("float", "base64")


@attrs.frozen(kw_only=True)
class PoolingInputRequest:
    """The input fields /v1/embeddings, /pooling and /classify share."""

    model: str | None = None
    input: Prompt | None = None
    messages: list[ChatMessageParam] | None = None
    add_special_tokens: bool | None = None  # default: True for `input`, False for `messages`
    add_generation_prompt: bool = False
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # -1: the model's maximum; k > 0: keep k tokens (on the tokenizer's truncation side).
    truncate_prompt_tokens: int | None = documented(minimum=-1)
    user: str | None = None
    request_id: str | None = None  # the response id's base, unless X-Request-Id is sent


@attrs.frozen(kw_only=True)
class EmbeddingRequest(PoolingInputRequest):
    # checked by the handler, naming the field
    encoding_format: str = documented("float", enum=list(ENCODING_FORMATS))
    dimensions: int | None = None


@attrs.frozen(kw_only=True)
class PoolingRequest(EmbeddingRequest):
    task: str | None = None


@attrs.frozen(kw_only=True)
class ClassifyRequest(PoolingInputRequest):
    pass


@attrs.frozen(kw_only=True)
class EmbeddingData:
    index: int
    object: str = "embedding"
    embedding: list[float] | str  # str: base64 of little-endian float32


@attrs.frozen(kw_only=True)
class EmbeddingResponse:
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[EmbeddingData]
    usage: UsageInfo


@attrs.frozen(kw_only=True)
class PoolingData:
    index: int
    object: str = "pooling"
    data: list[float] | str


@attrs.frozen(kw_only=True)
class PoolingResponse:
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[PoolingData]
    usage: UsageInfo


@attrs.frozen(kw_only=True)
class ClassifyData:
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


@attrs.frozen(kw_only=True)
class ClassifyResponse:
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ClassifyData]
    usage: UsageInfo


COHERE_EMBEDDING_TYPES = ("float", "binary", "ubinary", "base64")
COHERE_TRUNCATE = ("NONE", "START", "END")


@attrs.frozen(kw_only=True)
class CohereEmbedRequest:
    """Cohere's Embed v2 request (texts only)."""

    model: str | None = None
    texts: list[str] = documented(
        attrs.NOTHING, minItems=1, items={"type": "string", "minLength": 1}
    )
    input_type: str | None = None  # accepted; a symmetric model has no use for it
    embedding_types: list[str] = documented(
        attrs.Factory(lambda: ["float"]),
        minItems=1,
        items={"enum": list(COHERE_EMBEDDING_TYPES)},
    )
    truncate: str = documented("END", enum=list(COHERE_TRUNCATE))  # checked by the handler
    output_dimension: int | None = None


@attrs.frozen(kw_only=True)
class CohereApiVersion:
    version: str = "2"


@attrs.frozen(kw_only=True)
class CohereBilledUnits:
    input_tokens: int
    image_tokens: int = 0


@attrs.frozen(kw_only=True)
class CohereMeta:
    api_version: CohereApiVersion = attrs.field(factory=CohereApiVersion)
    billed_units: CohereBilledUnits


@attrs.frozen(kw_only=True)
class CohereEmbedResponse:
    id: str
    embeddings: dict[str, list[Any]]  # embedding type -> one entry per text
    texts: list[str]
    meta: CohereMeta
    response_type: str = "embeddings_by_type"
