"""GET /openapi.json (OpenAPI 3.1) generated from the attrs schemas, and GET /docs rendering it.

The attrs classes in the API packages' schema modules are what the converter parses requests
into and dumps responses from, so a document derived from them cannot drift from what the
server accepts and sends. The walk below maps each field's annotation to JSON Schema (2020-12,
the 3.1 dialect). What annotations cannot say comes from the fields
themselves (the bounds and keywords protocol/bounds.py declares on them: n >= 1, 0 < top_p <= 1,
...), from tables next to the walk (the union aliases the converter decides by hand: Prompt,
Stop, MessageContent; the served model names and max_logprobs from the settings), and from the
routes whose body comes in two forms. Requests and responses differ in what
"required" means: a request field is required when it has no default, while a response always
carries every field except those dropped when None (OMIT_IF_NONE).
"""

from __future__ import annotations

import functools
import operator
import re
import types
import typing
from typing import Any

import attrs
import orjson

from protocol.bounds import TOKEN_ID, json_schema
from protocol.generation.request_schemas import (
    OMIT_IF_NONE,
    GenerationRequest,
    Prompt,
    Stop,
)
from protocol.http import Request, Response
from protocol.model_resolution import server_state
from protocol.openai.chat_schemas import (
    ChatCompletionRequest,
    ChatContentPart,
    MessageContent,
)
from protocol.openai.completion_schemas import (
    CompletionRequest,
)
from protocol.operations.handlers import lumen_version
from protocol.pooling.score_schemas import ScoreRequest
from protocol.route import JSON, Route

OPENAPI_VERSION = "3.1.0"
SSE = "text/event-stream"
_REF = "#/components/schemas/"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# --- schemas that annotations cannot express ---------------------------------------------------

# Written to match the converter's hooks for these unions (protocol/converter.py); the bounds
# are the handlers' (an empty prompt or stop string is a 400).
_NAMED_SCHEMAS: dict[str, dict[str, Any]] = {
    "Prompt": {
        "description": "A string, strings, token ids, or lists of token ids.",
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            {"type": "array", "items": TOKEN_ID, "minItems": 1},
            {
                "type": "array",
                "items": {"type": "array", "items": TOKEN_ID, "minItems": 1},
                "minItems": 1,
            },
        ],
    },
    "Stop": {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}},
        ]
    },
    "MessageContent": {
        "anyOf": [{"type": "string"}, {"type": "array", "items": ref("ChatContentPart")}]
    },
    # A score side: one text or several, none empty.
    "Texts": {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        ]
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": "integer"},
                },
            }
        },
    },
    "HealthStatus": {
        "description": "Empty when ready; otherwise the state (loading, failed, draining) and "
        "what failed. With deep=true, each model has served a request.",
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "error": {"type": ["string", "null"]},
            "errors": {"type": "object", "additionalProperties": {"type": "string"}},
            "models": {"type": "array", "items": {"type": "string"}},
        },
    },
    "SleepState": {
        "type": "object",
        "required": ["is_sleeping", "level"],
        "properties": {
            "is_sleeping": {"type": "boolean"},
            "level": {"type": "integer", "minimum": 0, "maximum": 2},
        },
    },
    "Load": {
        "type": "object",
        "required": ["server_load"],
        "properties": {"server_load": {"type": "integer", "minimum": 0}},
    },
    "Version": {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string"}},
    },
    "TokenizerInfo": {
        "description": "The tokenizer's configuration (tokenizer_config.json as loaded, file "
        "paths left out), its class and the chat template.",
        "type": "object",
        "required": ["tokenizer_class"],
        "properties": {
            "tokenizer_class": {"type": "string"},
            "chat_template": {"type": "string"},
        },
        "additionalProperties": True,
    },
}

# Unions named by an alias → the component that describes them. Looked up by equality, since a
# resolved annotation is a new union object with the same members.
# The classes listed are those the hand-written schema refers to.
_NAMED_UNIONS: list[tuple[Any, str, tuple[type, ...]]] = [
    (Prompt, "Prompt", ()),
    (Stop, "Stop", ()),
    (MessageContent, "MessageContent", (ChatContentPart,)),
]

_TOOL_CHOICE = {
    "anyOf": [
        {"type": "string", "enum": ["none", "auto", "required"]},
        {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
        {"type": "null"},
    ]
}

# Request fields whose generated schema is replaced outright.
_FIELD_SCHEMAS: dict[type, dict[str, dict[str, Any]]] = {
    ChatCompletionRequest: {"tool_choice": _TOOL_CHOICE},
    CompletionRequest: {"prompt": ref("Prompt")},
    # Only text parts are rendered (protocol/generation/chat_template.py), and they need their text.
    ChatContentPart: {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    ScoreRequest: {
        name: nullable(ref("Texts"))
        for name in ("text_1", "text_2", "queries", "documents", "items", "data_1", "data_2")
    },
}

# Fields a handler refuses to go without although the class gives them a default.
_REQUIRED: dict[type, tuple[str, ...]] = {
    CompletionRequest: ("prompt",),
    ChatContentPart: ("text",),
}


def _score_sides(first: str, second: str) -> dict[str, Any]:
    return {"required": [first, second], "properties": {first: ref("Texts"), second: ref("Texts")}}


# Keywords added to a whole request object: the score sides come under any of vLLM's names.
_OBJECT_EXTRAS: dict[type, dict[str, Any]] = {
    ScoreRequest: {
        "anyOf": [
            _score_sides("text_1", "text_2"),
            _score_sides("queries", "documents"),
            _score_sides("queries", "items"),
            _score_sides("data_1", "data_2"),
        ]
    },
}


def _lookup(table: dict[type, dict[str, Any]], cls: type, field: str) -> Any:
    for base in cls.__mro__:
        found = table.get(base, {}).get(field)
        if found is not None:
            return found
    return None


def _json_default(field: attrs.Attribute) -> tuple[bool, Any]:
    """(has a default worth documenting, the default as JSON data)."""
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return False, None
        default = default.factory()
    if attrs.has(type(default)):
        return False, None
    return True, default


def _merged(
    table: dict[type, dict[str, dict[str, Any]]], more: dict[type, dict[str, dict[str, Any]]]
) -> dict[type, dict[str, dict[str, Any]]]:
    result = {cls: dict(fields) for cls, fields in table.items()}
    for cls, fields in more.items():
        for name, schema in fields.items():
            result.setdefault(cls, {})[name] = {**result.get(cls, {}).get(name, {}), **schema}
    return result


class SchemaBuilder:
    """Collects components/schemas while turning types into JSON Schema.

    `models` (the served names) and `max_logprobs` come from the settings: with them the
    document says what this deployment accepts, not only what the API could."""

    def __init__(self, models: typing.Sequence[str] = (), max_logprobs: int | None = None) -> None:
        self.schemas: dict[str, dict[str, Any]] = dict(_NAMED_SCHEMAS)
        self._names: dict[tuple[type, str, str], str] = {}
        field_schemas: dict[type, dict[str, dict[str, Any]]] = {}
        if models:
            # `object` is in every class's MRO: every request's `model` field.
            model = {"type": ["string", "null"], "enum": [*models, None]}
            field_schemas[object] = {"model": model}
        self.field_schemas = _merged(_FIELD_SCHEMAS, field_schemas)
        # The deployment's own limits, beyond what the fields declare (protocol/bounds.py).
        self.field_bounds: dict[type, dict[str, dict[str, Any]]] = {}
        if max_logprobs is not None:
            most = {"maximum": max_logprobs}
            self.field_bounds = {
                GenerationRequest: {"prompt_logprobs": most},
                CompletionRequest: {"logprobs": most},
                ChatCompletionRequest: {"top_logprobs": most},
            }

    def type_schema(self, tp: Any, side: str) -> dict[str, Any]:
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        simple = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp)
        if simple is not None:
            return {"type": simple}
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return self._union(typing.get_args(tp), side)
        if origin is list:
            (item,) = typing.get_args(tp)
            return {"type": "array", "items": self.type_schema(item, side)}
        if origin is dict:
            key, value = typing.get_args(tp)
            if key is not str:
                raise TypeError(f"JSON object keys are strings, not {key!r}")
            if value is Any:
                return {"type": "object"}
            return {"type": "object", "additionalProperties": self.type_schema(value, side)}
        if isinstance(tp, type) and attrs.has(tp):
            return self.component(tp, side)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _union(self, members: tuple[Any, ...], side: str) -> dict[str, Any]:
        non_null = [m for m in members if m is not type(None)]
        is_nullable = len(non_null) < len(members)
        joined = functools.reduce(operator.or_, non_null)
        for union, name, referenced in _NAMED_UNIONS:
            if joined == union:
                for cls in referenced:
                    self.component(cls, side)
                return nullable(ref(name)) if is_nullable else ref(name)
        schemas = [self.type_schema(m, side) for m in members]
        # Plain types merge into one list ({"type": ["string", "null"]}), and a null joins a
        # single typed schema the same way; anything else stays an anyOf.
        if all(set(s) == {"type"} for s in schemas):
            return {"type": [s["type"] for s in schemas]}
        if is_nullable and len(schemas) == 2:
            (typed,) = [s for s in schemas if s != {"type": "null"}]
            if isinstance(typed.get("type"), str):
                return {**typed, "type": [typed["type"], "null"]}
        return {"anyOf": schemas}

    def component(
        self,
        cls: type,
        side: str,
        *,
        name: str | None = None,
        overrides: dict[str, Any] | None = None,
        required: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """A $ref to the schema of attrs class `cls` as a request or a response (made once).
        `overrides` replaces field schemas (False forbids the field) and `required` adds
        required fields: how one class makes the variants of a two-form body."""
        key = (cls, side, name or "")
        if key not in self._names:
            chosen = name or cls.__name__
            if chosen in self.schemas:  # the same class reached from the other side
                chosen += "Response" if side == "response" else "Request"
            self._names[key] = chosen
            self.schemas[chosen] = {}  # reserved first: a class may refer to itself
            self.schemas[chosen] = self._object(cls, side, overrides or {}, required)
        return ref(self._names[key])

    def _object(
        self, cls: type, side: str, overrides: dict[str, Any], extra_required: tuple[str, ...]
    ) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            if field.name in overrides:
                properties[field.name] = overrides[field.name]
                continue
            schema = None
            if side == "request":
                schema = _lookup(self.field_schemas, cls, field.name)
            if schema is None:
                schema = self.type_schema(hints[field.name], side)
            if side == "request":
                bounds = _lookup(self.field_bounds, cls, field.name) or {}
                schema = {**schema, **json_schema(field), **bounds}
                if field.default is attrs.NOTHING or field.name in _REQUIRED.get(cls, ()):
                    required.append(field.name)
                else:
                    documented, default = _json_default(field)
                    if documented:
                        schema["default"] = default
            elif not field.metadata.get(OMIT_IF_NONE):
                required.append(field.name)
            properties[field.name] = schema
        for name, schema in overrides.items():  # keys the class does not have
            properties.setdefault(name, schema)
        for name in extra_required:
            if name not in required:
                required.append(name)
        result: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            result["required"] = required
        if side == "response":
            # Responses are exactly their fields; requests may carry others (ignored).
            result["additionalProperties"] = False
        if side == "request":
            result.update(_OBJECT_EXTRAS.get(cls, {}))
        doc = (cls.__doc__ or "").strip()
        if doc:
            result["description"] = doc
        return result


# --- routes -------------------------------------------------------------------------------------


def _body_schema(spec: Any, builder: SchemaBuilder, side: str) -> dict[str, Any]:
    if spec is None:
        return {"type": "object"}
    if isinstance(spec, str):
        return ref(spec)
    if isinstance(spec, type) and attrs.has(spec):
        return builder.component(spec, side)
    return spec(builder)


def _sse_event(chunk: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event: `data:` is a chunk, an in-band error, or the closing [DONE]."""
    payload = {"anyOf": [chunk, ref("Error")]}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": JSON,
                        "contentSchema": payload,
                    },
                ]
            }
        },
    }


def _operation(op: Route, builder: SchemaBuilder) -> dict[str, Any]:
    content: dict[str, Any]
    if op.media_type == JSON:
        content = {JSON: {"schema": _body_schema(op.response, builder, "response")}}
    else:
        content = {op.media_type: {"schema": {"type": "string"}}}
    if op.stream is not None:
        chunk = _body_schema(op.stream, builder, "response")
        content[SSE] = {"schema": _sse_event(chunk)}
    error_schema = ref("Error") if op.error is None else _body_schema(op.error, builder, "response")
    error = {"description": "The error body", "content": {JSON: {"schema": error_schema}}}
    responses: dict[str, Any] = {"200": {"description": "Success", "content": content}}
    if op.response == "HealthStatus":
        responses["503"] = {"description": "Not ready", "content": content}
    responses["4XX"] = error
    responses["5XX"] = error
    result: dict[str, Any] = {
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_').replace('.', '_')}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.request is not None:
        result["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _body_schema(op.request, builder, "request")}},
        }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", op.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query.items()
    ]
    if parameters:
        result["parameters"] = parameters
    if op.public:  # open even when the server has an API key
        result["security"] = []
    return result


def build_openapi(
    routes: typing.Iterable[Route],
    version: str,
    *,
    models: typing.Sequence[str] = (),
    max_logprobs: int | None = None,
) -> dict[str, Any]:
    """The OpenAPI document of `routes` (protocol/routes.py's table)."""
    builder = SchemaBuilder(models, max_logprobs)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, builder)
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "lumen",
            "version": version,
            "description": "An OpenAI-compatible inference server with vLLM's HTTP surface.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            # Only enforced when the server has an API key.
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}, {}],
    }


def document_routes(served: list[Route]) -> list[Route]:
    """GET /openapi.json and GET /docs, documenting `served` and themselves."""
    table: list[Route] = []

    @functools.lru_cache(maxsize=4)
    def document(models: tuple[str, ...], max_logprobs: int | None) -> bytes:
        doc = build_openapi(table, lumen_version(), models=models, max_logprobs=max_logprobs)
        return orjson.dumps(doc)

    async def openapi_json(request: Request) -> Response:
        settings = server_state(request).settings
        names = tuple(spec.name for spec in settings.served_models())
        return Response(status=200, body=document(names, settings.max_logprobs))

    async def docs(request: Request) -> Response:
        return Response(status=200, body=_DOCS_HTML, media_type="text/html; charset=utf-8")

    own = [
        Route("GET", "/openapi.json", openapi_json, "This document", "server", public=True),
        Route(
            "GET",
            "/docs",
            docs,
            "This document, rendered",
            "server",
            media_type="text/html",
            public=True,
        ),
    ]
    table.extend([*served, *own])
    return own


# Self-contained (no CDN: servers often have no internet): lists each route with its schemas.
_DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>lumen API</title>
<style>body{font:14px sans-serif;max-width:60em;margin:2em auto}summary{cursor:pointer}
pre{background:#f4f4f4;padding:.5em;overflow:auto}code{font-weight:bold}</style></head>
<body><h1>lumen API</h1><p>The raw document: <a href="/openapi.json">/openapi.json</a></p>
<div id="ops"></div><script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const out = document.getElementById("ops");
  const pre = v => "<pre>" + JSON.stringify(v, null, 2).replace(/</g, "&lt;") + "</pre>";
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item)) {
      const d = document.createElement("details");
      d.innerHTML = "<summary><code>" + method.toUpperCase() + " " + path + "</code> " +
        op.summary + "</summary>" + (op.requestBody ? "<h4>Request</h4>" +
        pre(op.requestBody.content) : "") + "<h4>Responses</h4>" + pre(op.responses);
      out.appendChild(d);
    }
  const s = document.createElement("details");
  s.innerHTML = "<summary><b>Schemas</b></summary>" + pre(spec.components.schemas);
  out.appendChild(s);
});
</script></body></html>
"""
