"""schemathesis fuzzes every route of /openapi.json against the real server.

What must hold for every generated request, valid or not: no 5xx, and every response (status
code, content type, body; each event of a stream) is one the document declares. The budget is
bounded so the run takes about a minute on two cores: a fixed seed, 100 random examples per
route plus the coverage phase's boundary cases (not on the generation routes, where each case
decodes), and every generation request capped to a few tokens and two choices.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# FUZZ_SEED and FUZZ_EXAMPLES explore further than CI's fixed, bounded run.
SEED = int(os.environ.get("FUZZ_SEED", "20260521"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
# Generation is the one expensive thing a request can ask for: cap what any body may ask.
MAX_NEW_TOKENS = 4
MAX_CHOICES = 2
MAX_CONVERSATIONS = 2
GENERATION_PATHS = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/chat/completions/batch",
    "/invocations",  # chat and completion bodies among others
    "/v1/responses",
    "/v1/messages",
)


@pytest.fixture(scope="module")
def api_schema(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    config = schemathesis.Config.from_dict(
        {
            "base-url": server.url,
            # A fixed seed: CI runs are reproducible, and a failure replays the same way.
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES},
            # Stateful tests chain calls through links; this API has none.
            "phases": {"stateful": {"enabled": False}},
            "operations": [
                {
                    # The coverage phase sends hundreds of boundary cases per route: cheap
                    # everywhere else, minutes of decoding here. Random examples only.
                    "include-path": list(GENERATION_PATHS),
                    "phases": {"coverage": {"enabled": False}},
                }
            ],
        }
    )
    return schemathesis.openapi.from_dict(spec, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def _cap_generation(case: schemathesis.Case) -> None:
    """Keeps every generation request cheap, valid or not: a bounded output budget (set when
    absent: chat would otherwise run to the context length), at most two choices and two
    conversations in a batch."""
    body = case.body
    if case.path not in GENERATION_PATHS or not isinstance(body, dict):
        return
    budget = "max_output_tokens" if case.path == "/v1/responses" else "max_tokens"
    if body.get(budget) is None:
        body[budget] = MAX_NEW_TOKENS
    for key, cap in (
        ("max_tokens", MAX_NEW_TOKENS),
        ("max_completion_tokens", MAX_NEW_TOKENS),
        ("max_output_tokens", MAX_NEW_TOKENS),
        ("n", MAX_CHOICES),
    ):
        value = body.get(key)
        # Integral floats count as integers (protocol/converter.py); other types are a 400.
        if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
            body[key] = cap
    if case.path.endswith("/batch") and isinstance(body.get("messages"), list):
        body["messages"] = body["messages"][:MAX_CONVERSATIONS]


@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
@schema.parametrize()
def test_every_route_conforms_to_its_schema(case: schemathesis.Case) -> None:
    _cap_generation(case)
    case.call_and_validate(checks=CHECKS, timeout=120)


def test_the_document_and_its_page_need_no_api_key(auth_server):
    with httpx.Client(base_url=auth_server.url, timeout=30) as http:
        doc = http.get("/openapi.json")
        assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.1")
        assert http.get("/docs").headers["content-type"].startswith("text/html")
        assert http.post("/tokenize", json={"prompt": "x"}).status_code == 401
