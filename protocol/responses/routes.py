"""The OpenAI Responses API's routes."""

from __future__ import annotations

from protocol.responses.handlers import create_response, delete_response, retrieve_response
from protocol.responses.schemas import (
    DeletedResponse,
    ResponseObject,
    ResponsesRequest,
    ResponseStreamEvent,
)
from protocol.route import Route

ROUTES = [
    Route(
        "POST",
        "/v1/responses",
        create_response,
        "Create a response (OpenAI Responses API)",
        "generation",
        ResponsesRequest,
        ResponseObject,
        ResponseStreamEvent,
    ),
    Route(
        "GET",
        "/v1/responses/{response_id}",
        retrieve_response,
        "A stored response",
        "generation",
        None,
        ResponseObject,
    ),
    Route(
        "DELETE",
        "/v1/responses/{response_id}",
        delete_response,
        "Delete a stored response",
        "generation",
        None,
        DeletedResponse,
    ),
]
