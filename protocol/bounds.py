"""What a request field accepts beyond its type, declared once on the field.

`bounded(...)` puts numeric bounds on an attrs field; the handlers' validation reads them
(`check_bounds`: a 400 naming the field, in vLLM's words) and so does the OpenAPI document
(`json_schema`: minimum, maximum, exclusiveMinimum). `documented(...)` adds JSON Schema
keywords that only the document needs (an enum the handler checks in its own words, item
rules), also kept on the field.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol.http import HTTPError

_BOUNDS = "bounds"
_SCHEMA = "json_schema"
TOKEN_ID = {"type": "integer", "minimum": 0}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@attrs.frozen
class Bounds:
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    # vLLM's message for this field, with {name} and {value}; None: "must be at least/most".
    message: str | None = None

    def allows(self, value: float) -> bool:
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.exclusive_minimum is None or value > self.exclusive_minimum)
        )

    def refusal(self, name: str, value: float) -> str:
        if self.message is not None:
            return self.message.format(name=name, value=value)
        if self.minimum is not None and value < self.minimum:
            return f"{name} must be at least {self.minimum}, got {value}."
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            return f"{name} must be greater than {self.exclusive_minimum}, got {value}."
        return f"{name} must be at most {self.maximum}, got {value}."

    def json_schema(self) -> dict[str, float]:
        keywords = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusiveMinimum": self.exclusive_minimum,
        }
        return {key: value for key, value in keywords.items() if value is not None}


def bounded(default: Any = None, *, schema: dict[str, Any] | None = None, **bounds: Any) -> Any:
    """An attrs field with `default` (attrs.NOTHING: required; an attrs.Factory) and
    Bounds(**bounds), and more JSON Schema if given."""
    metadata: dict[str, Any] = {_BOUNDS: Bounds(**bounds)}
    if schema:
        metadata[_SCHEMA] = schema
    return attrs.field(default=default, metadata=metadata)


def documented(default: Any = None, **schema: Any) -> Any:
    """An attrs field with `default` (as in `bounded`) whose JSON Schema adds `schema`'s
    keywords."""
    return attrs.field(default=default, metadata={_SCHEMA: schema})


def json_schema(field: attrs.Attribute) -> dict[str, Any]:
    """The keywords a field declares beyond its type (empty when it declares none)."""
    bounds = field.metadata.get(_BOUNDS)
    return {**(bounds.json_schema() if bounds else {}), **field.metadata.get(_SCHEMA, {})}


def check_bounds(cls: type, name: str, value: float | None, param: str | None = None) -> None:
    """A 400 when `value` (the request's, or a default standing in for it) is outside the
    bounds declared on `cls`'s field `name`."""
    bounds = attrs.fields_dict(cls)[name].metadata[_BOUNDS]
    if value is not None and not bounds.allows(value):
        raise HTTPError(400, bounds.refusal(name, value), "BadRequestError", param or name)
