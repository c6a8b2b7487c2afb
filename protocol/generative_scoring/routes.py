"""The generative scoring route (vLLM's extension for generative models)."""

from __future__ import annotations

from protocol.generative_scoring.handlers import create_generative_scoring
from protocol.generative_scoring.schemas import (
    GenerativeScoringRequest,
    GenerativeScoringResponse,
)
from protocol.route import Route

ROUTES = [
    Route(
        "POST",
        "/generative_scoring",
        create_generative_scoring,
        "The probability of label tokens coming next after query + item, for each item",
        "generation",
        GenerativeScoringRequest,
        GenerativeScoringResponse,
    ),
]
