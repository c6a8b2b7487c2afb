"""POST /classify: each input's class probabilities and its most likely label."""

from __future__ import annotations

import anyio

from protocol import response_bodies
from protocol.converter import parse_body
from protocol.http import Request, Response
from protocol.model_resolution import CLASSIFY, resolve_model, server_state
from protocol.pooling.embeddings import pooling_usage
from protocol.pooling.inputs import pooled_vectors, request_token_ids
from protocol.pooling.schemas import ClassifyData, ClassifyRequest, ClassifyResponse


async def classify(request: Request) -> Response:
    req = parse_body(request, ClassifyRequest)
    served = resolve_model(request, req.model, CLASSIFY)
    token_ids = await anyio.to_thread.run_sync(
        request_token_ids, served, req, server_state(request).settings
    )
    probs = (await pooled_vectors(served, token_ids)).cpu()  # [inputs, num_labels]
    id2label = served.engine.encoder.id2label
    data = [
        ClassifyData(
            index=i,
            label=id2label.get(int(row.argmax())),
            probs=row.tolist(),
            num_classes=row.shape[0],
        )
        for i, row in enumerate(probs)
    ]
    return response_bodies.json_body(
        ClassifyResponse(
            id=response_bodies.response_id("classify-", request, req.request_id),
            created=response_bodies.created_now(),
            model=served.name,
            data=data,
            usage=pooling_usage(token_ids),
        )
    )
