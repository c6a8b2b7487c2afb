"""Bounds declared once on a request field: the handlers' validation and the OpenAPI document
read the same numbers, so a value one side refuses the other refuses too."""

from __future__ import annotations

import attrs
import jsonschema
import pytest
from protocol_fakes import ScriptedEngine, served

from protocol import openapi
from protocol.bounds import Bounds, check_bounds
from protocol.converter import structure
from protocol.generation.request_schemas import GenerationRequest
from protocol.generation.sampling import request_params
from protocol.http import HTTPError
from protocol.openai.completion_schemas import CompletionRequest
from protocol.routes import build_routes

MODEL = served(ScriptedEngine())
BOUNDED = [field.name for field in attrs.fields(GenerationRequest) if "bounds" in field.metadata]


def _outside(bounds: Bounds) -> list[float]:
    """Values just outside each declared limit."""
    values = []
    if bounds.minimum is not None:
        values.append(bounds.minimum - 1)
    if bounds.exclusive_minimum is not None:
        values.append(bounds.exclusive_minimum)
    if bounds.maximum is not None:
        values.append(bounds.maximum + 1)
    return values


def test_the_sampling_fields_declare_their_bounds() -> None:
    assert set(BOUNDED) >= {"n", "temperature", "top_p", "top_k", "min_p", "seed", "min_tokens"}


@pytest.mark.parametrize("name", BOUNDED)
def test_a_value_outside_a_fields_bounds_is_refused_by_the_handler_and_the_document(
    name: str,
) -> None:
    doc = openapi.build_openapi(build_routes(), "0")
    schema = doc["components"]["schemas"]["CompletionRequest"]
    validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
    bounds = attrs.fields_dict(GenerationRequest)[name].metadata["bounds"]
    for value in _outside(bounds):
        value = int(value) if isinstance(value, int) else value
        assert not validator.is_valid({"prompt": "x", name: value}), (name, value)
        req = structure({"prompt": "x", name: value}, CompletionRequest)
        with pytest.raises(HTTPError) as info:
            request_params(
                req, MODEL, 1, max_tokens=None, logprobs=None, max_logprobs=20, grammar=None
            )
        assert (info.value.status, info.value.param) == (400, name)
        assert name in info.value.message


def test_a_refusal_speaks_vllms_words() -> None:
    with pytest.raises(HTTPError) as info:
        check_bounds(GenerationRequest, "top_p", 1.5)
    assert info.value.message == "top_p must be in (0, 1], got 1.5."
    with pytest.raises(HTTPError) as info:
        check_bounds(GenerationRequest, "n", 0)
    assert info.value.message == "n must be at least 1, got 0."
