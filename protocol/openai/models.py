"""GET /v1/models: one card per served model name (an empty list while the model loads)."""

from __future__ import annotations

from protocol import response_bodies
from protocol.http import Request, Response
from protocol.model_resolution import server_state
from protocol.openai.model_schemas import ModelCard, ModelList, ModelPermission


async def list_models(request: Request) -> Response:
    now = response_bodies.created_now()
    cards = [
        ModelCard(
            id=name,
            created=served.created,
            root=served.model_path,
            max_model_len=served.max_model_len,
            permission=[
                ModelPermission(id=f"modelperm-{response_bodies.random_uuid()}", created=now)
            ],
        )
        for name, served in server_state(request).models.items()
    ]
    return response_bodies.json_body(ModelList(data=cards))
