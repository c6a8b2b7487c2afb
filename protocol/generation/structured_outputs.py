"""Request fields → the llguidance grammar the engine enforces token by token.

Accepted spellings: vLLM's `structured_outputs` {json | regex | choice | grammar | json_object},
its older top-level `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`, and
OpenAI's `response_format` {"type": "text" | "json_object" | "json_schema"}. At most one
constraint per request; a schema, regex or grammar that does not compile is a 400 here, before
anything is generated.
"""

from __future__ import annotations

import re
from typing import Any

import llguidance
import orjson
from llguidance.gbnf_to_lark import any_to_lark

from protocol.generation.request_schemas import GenerationRequest
from protocol.http import HTTPError

# Compact JSON (no free whitespace between tokens): a small model cannot wander off into
# endless spaces and newlines, and the output parses the same.
_JSON_OPTIONS = {"whitespace_flexible": False}


def _invalid(message: str, param: str) -> HTTPError:
    return HTTPError(400, message, "BadRequestError", param)


def json_schema_grammar(schema: dict[str, Any] | str, param: str, max_chars: int) -> str:
    """The grammar of JSON text that matches `schema`; a 400 naming `param` if it is invalid or
    longer than max_chars."""
    text = schema if isinstance(schema, str) else orjson.dumps(schema).decode()
    _check_size(len(text), max_chars, "JSON schema", param)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=_JSON_OPTIONS)
    except ValueError as exc:  # not JSON at all
        raise _invalid(f"Invalid JSON schema: {exc}", param) from None
    _check(grammar, "json", param)
    return grammar


def _check_size(num_chars: int, max_chars: int, kind: str, param: str) -> None:
    # Compiling a grammar costs more than linear time in its size; refuse before compiling.
    if num_chars > max_chars:
        raise _invalid(
            f"The {kind} has {num_chars} characters; this server compiles at most {max_chars} "
            "(max_grammar_chars).",
            param,
        )


def _check(grammar: str, kind: str, param: str) -> None:
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise _invalid(f"Invalid {kind} for structured output: {error}", param)


def _constraints(req: GenerationRequest) -> list[tuple[str, str, Any]]:
    """(kind, param, value) of every constraint the request sets."""
    found: list[tuple[str, str, Any]] = []
    so = req.structured_outputs
    if so is not None:
        for kind in ("json", "regex", "choice", "grammar"):
            value = getattr(so, kind)
            if value is not None:
                found.append((kind, f"structured_outputs.{kind}", value))
        if so.json_object:
            found.append(("json", "structured_outputs.json_object", {"type": "object"}))
    for kind in ("json", "regex", "choice", "grammar"):
        value = getattr(req, f"guided_{kind}")
        if value is not None:
            found.append((kind, f"guided_{kind}", value))
    fmt = req.response_format
    if fmt is not None:
        if fmt.type == "json_object":
            found.append(("json", "response_format", {"type": "object"}))
        elif fmt.type == "json_schema":
            if fmt.json_schema is None or fmt.json_schema.schema is None:
                raise _invalid(
                    "response_format of type json_schema needs json_schema.schema",
                    "response_format",
                )
            found.append(("json", "response_format.json_schema", fmt.json_schema.schema))
        elif fmt.type != "text":
            raise _invalid(
                f"response_format.type must be 'text', 'json_object' or 'json_schema', got "
                f"{fmt.type!r}",
                "response_format",
            )
    return found


def request_grammar(req: GenerationRequest, max_chars: int) -> str | None:
    """The grammar for the request's constraint, or None when it sets none; a constraint of
    more than max_chars characters is a 400."""
    found = _constraints(req)
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(param for _, param, _ in found)
        raise _invalid(f"Only one kind of structured output may be set; got {names}.", found[1][1])
    kind, param, value = found[0]
    if kind == "json":
        return json_schema_grammar(value, param, max_chars)
    if isinstance(value, str):
        _check_size(len(value), max_chars, kind, param)
    elif isinstance(value, list):
        _check_size(sum(len(c) if isinstance(c, str) else 0 for c in value), max_chars, kind, param)
    if kind == "regex":
        grammar = llguidance.LLMatcher.grammar_from_regex(value)
    elif kind == "choice":
        if not value or not all(isinstance(c, str) and c for c in value):
            raise _invalid("choice must be a non-empty list of non-empty strings", param)
        grammar = llguidance.LLMatcher.grammar_from_regex("|".join(map(re.escape, value)))
    else:
        # Lark as llguidance reads it, or GBNF (`root ::= "yes" | "no"`, the form vLLM
        # documents), converted to Lark first.
        try:
            lark = any_to_lark(value)
        # The converter raises plain Exceptions too (a GBNF grammar without a root rule).
        except Exception as exc:  # noqa: BLE001 - every failure here is the client's grammar
            raise _invalid(f"Invalid grammar for structured output: {exc}", param) from None
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    _check(grammar, kind, param)
    return grammar
