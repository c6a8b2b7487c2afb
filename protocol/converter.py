"""The server's one cattrs converter, and request-body parsing into the attrs schemas.

Why the extra hooks on top of cattrs' orjson preconf:
- cattrs structures primitives by calling the type (`int("3")`, `bool("no") is True`); a JSON
  API should reject wrong types instead, so str/int/float/bool are strict here.
- a list or mapping field given a string would be iterated character by character, and an
  object field given a number fails with an unhelpful message; these hooks check shape first.
- OpenAI's union fields (prompt, stop, message content) are decided by looking at the value.
- unknown keys are accepted, as vLLM does, and logged at debug.
Every failure becomes a 400 whose message and `param` name the JSON path of the bad field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, get_origin

import attrs
import cattrs
import orjson
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from protocol.generation.request_schemas import OMIT_IF_NONE, Prompt, Stop
from protocol.http import HTTPError, Request
from protocol.openai.chat_schemas import ChatContentPart, MessageContent

logger = logging.getLogger(__name__)

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=False)


class SchemaError(ValueError):
    """Raised by our structure hooks; its message is shown to the client as is."""


# --- strict primitives -------------------------------------------------------------------------


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise SchemaError("expected a string")
    return value


def _structure_int(value: Any, _: type) -> int:
    # bool is an int subclass in Python but not a number in JSON.
    if isinstance(value, bool):
        raise SchemaError("expected an integer")
    if isinstance(value, int):
        return value
    # orjson reads integers beyond 64 bits as floats; integral floats are accepted like pydantic.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SchemaError("expected an integer")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError("expected a number")
    return float(value)


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise SchemaError("expected a boolean")
    return value


converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(bool, _structure_bool)


# --- shape checks for containers and objects ---------------------------------------------------


def _list_hook_factory(type_: Any) -> Callable[[Any, Any], Any]:
    inner = list_structure_factory(type_, converter)

    def structure(value: Any, cls: Any) -> Any:
        if not isinstance(value, list):
            raise SchemaError("expected an array")
        return inner(value, cls)

    return structure


def _mapping_hook_factory(type_: Any) -> Callable[[Any, Any], Any]:
    inner = mapping_structure_factory(type_, converter)

    def structure(value: Any, cls: Any) -> Any:
        if not isinstance(value, dict):
            raise SchemaError("expected an object")
        return inner(value, cls)

    return structure


def _attrs_hook_factory(cls: type) -> Callable[[Any, Any], Any]:
    inner = make_dict_structure_fn(cls, converter)
    known = frozenset(a.name for a in attrs.fields(cls))

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise SchemaError("expected an object")
        if logger.isEnabledFor(logging.DEBUG):
            unknown = value.keys() - known
            if unknown:
                logger.debug("ignoring unknown fields %s in %s", sorted(unknown), cls.__name__)
        return inner(value, cls)

    return structure


converter.register_structure_hook_factory(
    lambda t: is_sequence(t) and get_origin(t) is list, _list_hook_factory
)
converter.register_structure_hook_factory(
    lambda t: is_mapping(t) and get_origin(t) is dict, _mapping_hook_factory
)
converter.register_structure_hook_factory(attrs.has, _attrs_hook_factory)


def _attrs_unstructure_factory(cls: type) -> Callable[[Any], dict[str, Any]]:
    omit = {
        a.name: override(omit_if_default=True)
        for a in attrs.fields(cls)
        if a.metadata.get(OMIT_IF_NONE)
    }
    return make_dict_unstructure_fn(cls, converter, **omit)


converter.register_unstructure_hook_factory(attrs.has, _attrs_unstructure_factory)


# --- OpenAI's union fields ---------------------------------------------------------------------


def _token_ids(values: Any) -> list[int] | None:
    """`values` as token ids (non-negative integers), or None if any is not one. Integral
    floats count, as they do for every other integer field (see _structure_int)."""
    if not isinstance(values, list):
        return None
    ids = []
    for value in values:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int or value < 0:
            return None
        ids.append(value)
    return ids


def _structure_prompt(value: Any, _: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(p, str) for p in value):  # also the empty list; rejected later
            return value
        ids = _token_ids(value)
        if ids is not None:
            return ids
        id_lists = [_token_ids(p) for p in value]
        if all(ids is not None for ids in id_lists):
            return id_lists
    raise SchemaError(
        "expected a string, an array of strings, an array of token ids (non-negative "
        "integers) or an array of arrays of token ids"
    )


def _structure_stop(value: Any, _: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise SchemaError("expected a string or an array of strings")


def _structure_content(value: Any, _: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return converter.structure(value, list[ChatContentPart])
    raise SchemaError("expected a string or an array of content parts")


def _register_union(union: Any, hook: Callable[[Any, Any], Any]) -> None:
    def optional_hook(value: Any, cls: Any) -> Any:
        return None if value is None else hook(value, cls)

    # Union types compare by their members, so this matches the resolved field annotations.
    converter.register_structure_hook_func(lambda t: t == union, hook)
    converter.register_structure_hook_func(lambda t: t == union | None, optional_hook)


_register_union(Prompt, _structure_prompt)
_register_union(Stop, _structure_stop)
_register_union(MessageContent, _structure_content)


# --- parsing request bodies --------------------------------------------------------------------


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    return cattrs.v.format_exception(exc, type_)


def _bad_request(message: str, param: str | None = None) -> HTTPError:
    return HTTPError(400, message, "BadRequestError", param)


def read_json_object(request: Request) -> dict[str, Any]:
    """Content-Type check, JSON decoding and "must be an object", each a clear 400."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        shown = content_type or "(none)"
        raise _bad_request(f"Unsupported Content-Type {shown!r}; expected application/json")
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise _bad_request(f"Invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else type(body).__name__
        raise _bad_request(f"Request body must be a JSON object, got {kind}")
    return body


def structure(obj: dict[str, Any], cls: type[T]) -> T:
    try:
        return converter.structure(obj, cls)
    except (cattrs.BaseValidationError, SchemaError) as exc:
        errors = cattrs.transform_error(exc, path="$", format_exception=_describe)
        # transform_error renders "<what> @ <path>"; the first path becomes `param`.
        path = errors[0].rpartition(" @ ")[2] if errors else "$"
        param = path.removeprefix("$").removeprefix(".") or None
        raise _bad_request("Invalid request: " + "; ".join(errors), param) from None


def parse_body(request: Request, cls: type[T]) -> T:
    return structure(read_json_object(request), cls)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(converter.unstructure(obj))
