"""The route table: every API package's routes, and the API document's own.

A new API is one package under protocol/ with a `routes.py` holding its ROUTES, and one entry in
API_ROUTES below.
"""

from __future__ import annotations

import attrs

from protocol.admission import engine_errors_as_http
from protocol.anthropic import routes as anthropic
from protocol.generative_scoring import routes as generative_scoring
from protocol.nesting import nesting_errors_as_http
from protocol.openai import routes as openai
from protocol.openapi import document_routes
from protocol.operations import routes as operations
from protocol.playground.routes import playground_routes
from protocol.pooling import routes as pooling
from protocol.responses import routes as responses
from protocol.route import Route
from protocol.sagemaker import routes as sagemaker
from protocol.sleep_mode import routes as sleep_mode
from protocol.tokenize import routes as tokenize

API_ROUTES = [
    *openai.ROUTES,
    *responses.ROUTES,
    *anthropic.ROUTES,
    *generative_scoring.ROUTES,
    *pooling.ROUTES,
    *tokenize.ROUTES,
    *sagemaker.ROUTES,
    *sleep_mode.ROUTES,
    *operations.ROUTES,
]


def build_routes(playground: bool = True) -> list[Route]:
    """Every route; playground: also GET / and its assets (the browser playground)."""
    routes = API_ROUTES + document_routes(API_ROUTES)
    if playground:
        routes += playground_routes()
    # Every handler answers an engine's refusal (at capacity, dead) with its HTTP status, and
    # input nested too deeply to process with a 400.
    return [
        attrs.evolve(r, handler=engine_errors_as_http(nesting_errors_as_http(r.handler)))
        for r in routes
    ]
