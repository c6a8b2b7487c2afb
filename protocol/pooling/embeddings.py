"""POST /v1/embeddings, POST /pooling and POST /v2/embed (Cohere Embed v2)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from protocol import response_bodies
from protocol.converter import parse_body
from protocol.generation.request_schemas import UsageInfo
from protocol.http import Request, Response, bad_request
from protocol.model_resolution import EMBEDDINGS, POOLING, resolve_model, server_state
from protocol.pooling.inputs import (
    check_choice,
    encode_texts,
    pooled_vectors,
    request_token_ids,
)
from protocol.pooling.schemas import (
    COHERE_EMBEDDING_TYPES,
    COHERE_TRUNCATE,
    ENCODING_FORMATS,
    CohereBilledUnits,
    CohereEmbedRequest,
    CohereEmbedResponse,
    CohereMeta,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingData,
    PoolingRequest,
    PoolingResponse,
)
from protocol.served_model import ServedModel

if TYPE_CHECKING:  # only for annotations: the tensors come from the engines
    import torch


def pooling_usage(token_ids: list[list[int]]) -> UsageInfo:
    tokens = sum(len(ids) for ids in token_ids)
    return UsageInfo(prompt_tokens=tokens, total_tokens=tokens)


def encode_vector(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    """float: a JSON array; base64: the little-endian float32 bytes, base64-encoded."""
    if encoding_format == "base64":
        raw = vector.numpy().astype("<f4", copy=False).tobytes()
        return base64.b64encode(raw).decode("ascii")
    return vector.tolist()


def check_dimensions(
    dimensions: int | None, served: ServedModel, param: str = "dimensions"
) -> None:
    if dimensions is None:
        return
    if dimensions < 1:
        raise bad_request("Dimensions must be greater than 0", param)
    raise bad_request(
        f'Model "{served.name}" does not support matryoshka representation, '
        "changing output dimensions will lead to poor results.",
        param,
    )


async def create_embedding(request: Request) -> Response:
    req = parse_body(request, EmbeddingRequest)
    served = resolve_model(request, req.model, EMBEDDINGS)
    check_choice(req.encoding_format, ENCODING_FORMATS, "encoding_format")
    check_dimensions(req.dimensions, served)
    token_ids = await anyio.to_thread.run_sync(
        request_token_ids, served, req, server_state(request).settings
    )
    vectors = (await pooled_vectors(served, token_ids)).cpu()
    data = [
        EmbeddingData(index=i, embedding=encode_vector(v, req.encoding_format))
        for i, v in enumerate(vectors)
    ]
    return response_bodies.json_body(
        EmbeddingResponse(
            id=response_bodies.response_id("embd-", request, req.request_id),
            created=response_bodies.created_now(),
            model=served.name,
            data=data,
            usage=pooling_usage(token_ids),
        )
    )


async def create_pooling(request: Request) -> Response:
    """The model's raw pooled output: an embedding model's vectors, or a classifier's
    probabilities."""
    req = parse_body(request, PoolingRequest)
    served = resolve_model(request, req.model, POOLING)
    check_choice(req.encoding_format, ENCODING_FORMATS, "encoding_format")
    own_task = "embed" if served.task == "embed" else "classify"
    if req.task is not None and req.task != own_task:
        raise bad_request(
            f"Unsupported task: {req.task!r}. The model `{served.name}` supports {own_task!r}.",
            "task",
        )
    check_dimensions(req.dimensions, served)
    token_ids = await anyio.to_thread.run_sync(
        request_token_ids, served, req, server_state(request).settings
    )
    outputs = (await pooled_vectors(served, token_ids)).cpu()
    return response_bodies.json_body(
        PoolingResponse(
            id=response_bodies.response_id("pooling-", request, req.request_id),
            created=response_bodies.created_now(),
            model=served.name,
            data=[
                PoolingData(index=i, data=encode_vector(v, req.encoding_format))
                for i, v in enumerate(outputs)
            ],
            usage=pooling_usage(token_ids),
        )
    )


async def create_cohere_embed(request: Request) -> Response:
    req = parse_body(request, CohereEmbedRequest)
    served = resolve_model(request, req.model, EMBEDDINGS)
    check_dimensions(req.output_dimension, served, "output_dimension")
    check_choice(req.truncate, COHERE_TRUNCATE, "truncate")
    unknown = [t for t in req.embedding_types if t not in COHERE_EMBEDDING_TYPES]
    if unknown or not req.embedding_types:
        raise bad_request(
            f"embedding_types must be a non-empty list of {list(COHERE_EMBEDDING_TYPES)}; "
            f"got {req.embedding_types}",
            "embedding_types",
        )
    token_ids = await anyio.to_thread.run_sync(_cohere_token_ids, served, req)
    vectors = (await pooled_vectors(served, token_ids)).cpu()
    embeddings = {kind: _cohere_embeddings(vectors, kind) for kind in req.embedding_types}
    return response_bodies.json_body(
        CohereEmbedResponse(
            id=response_bodies.random_uuid(),
            embeddings=embeddings,
            texts=req.texts,
            meta=CohereMeta(
                billed_units=CohereBilledUnits(input_tokens=sum(len(ids) for ids in token_ids))
            ),
        )
    )


def _keep_end(token_ids: list[int], max_len: int, tokenizer: Any) -> list[int]:
    """The last tokens of an over-long input, keeping its first (e.g. [CLS]) token."""
    if len(token_ids) <= max_len:
        return token_ids
    return token_ids[:1] + token_ids[len(token_ids) - max_len + 1 :]


def _cohere_token_ids(served: ServedModel, req: CohereEmbedRequest) -> list[list[int]]:
    keep = None if req.truncate == "NONE" else served.max_model_len
    if req.truncate == "START":  # keep the end of each text: tokenize, then cut the start
        return [
            _keep_end(ids, served.max_model_len, served.tokenizer)
            for ids in encode_texts(served, req.texts, True, None, enforce_max_len=False)
        ]
    return encode_texts(served, req.texts, True, keep)


def _cohere_embeddings(vectors: torch.Tensor, kind: str) -> list[Any]:
    if kind == "float":
        return vectors.tolist()
    if kind == "base64":
        return [encode_vector(v, "base64") for v in vectors]
    # binary / ubinary: one bit per dimension (1 where positive), packed 8 to a byte; binary
    # is the same bytes as signed int8 (Cohere's encoding: value - 128).
    packed = np.packbits((vectors > 0).numpy().astype(np.uint8), axis=-1).astype(np.int16)
    return (packed if kind == "ubinary" else packed - 128).tolist()
