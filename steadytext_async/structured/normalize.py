"""Every accepted constraint form -> one :class:`Constraint`, or :class:`InvalidRequestError` before any work.

Accepted: ``schema=`` a JSON-schema dict, a Pydantic model class, or a Python type / typing form (converted with
Pydantic's ``TypeAdapter``); ``regex=`` a pattern the whole output must match; ``choices=`` a list of strings;
``response_format=`` OpenAI's ``{"type": "json_object"}``, ``{"type": "json_schema", "json_schema": {...}}`` or
``{"type": "text"}`` (no constraint).

Canonical schemas drop ``title`` annotations and sort keywords, but keep the order of ``properties`` (it is the
order fields are generated in), so a dict schema and the equivalent Pydantic model give the same constraint.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import typing
import warnings
from collections.abc import Mapping
from typing import Any

from .._exceptions import InvalidRequestError
from ._constraint import Constraint, canonical_json
from ._keywords import map_subschemas
from .grammar import grammar_problem

__all__ = ["Constraint", "normalize", "schema_from_type"]

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


MAX_SCHEMA_DEPTH = 64  # nested dicts/lists; deeper (or self-referencing) schemas are refused before any work
MAX_SCHEMA_NODES = 100_000


def _check_shape(schema: object) -> None:
    """Refuse schemas too deep, too large or cyclic, iteratively (so no RecursionError can escape later)."""
    stack: list[tuple[object, int]] = [(schema, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidRequestError(
                f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels (or contains itself); use $defs and $ref"
            )
        if nodes > MAX_SCHEMA_NODES:
            raise InvalidRequestError(f"schema has more than {MAX_SCHEMA_NODES} objects and arrays")
        stack.extend((child, depth + 1) for child in children)


def _utf8(text: str, what: str) -> str:
    """``text`` if it encodes as UTF-8 (no lone surrogates), else InvalidRequestError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"{what} is not valid Unicode text ({exc.reason} at index {exc.start})") from None
    return text


def _canonical_schema(schema: Any) -> Any:
    """Sorted keywords, no ``title``; subschemas recursively; data (enum, const, default...) untouched."""
    if not isinstance(schema, Mapping):
        return schema
    for key in schema:
        if not isinstance(key, str):
            raise InvalidRequestError(f"schema keys must be strings, got {key!r}")
    kept = {k: schema[k] for k in sorted(schema) if not (k == "title" and isinstance(schema[k], str))}
    return map_subschemas(kept, _canonical_schema, sort_maps=True)


def _is_type_form(value: object) -> bool:
    return isinstance(value, type) or typing.get_origin(value) is not None


def schema_from_type(tp: Any) -> dict[str, Any]:
    """The JSON schema Pydantic derives for a model class, dataclass, TypedDict, Enum or typing form."""
    from pydantic import TypeAdapter
    from pydantic.errors import PydanticUserError

    try:
        schema: dict[str, Any] = TypeAdapter(tp).json_schema(mode="validation")
    except (PydanticUserError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"cannot derive a JSON schema from {tp!r}: {exc}") from exc
    return schema


def _schema_constraint(schema: object, *, name: str | None = None) -> Constraint:
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(f"a JSON schema must be a dict, got {type(schema).__name__}")
    _check_shape(schema)
    canonical_schema = _canonical_schema(schema)
    payload: dict[str, Any] = {"kind": "json_schema", "schema": canonical_schema}
    if name is not None:
        payload["name"] = name
    try:
        text = _utf8(canonical_json(payload), "schema")
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"schema is not JSON-serializable: {str(exc)[:200]}") from None
    problem = _schema_problem(text)
    if problem is not None:
        raise InvalidRequestError(problem)
    return Constraint("json_schema", text)


def validator_class(schema: Any) -> Any:
    """The jsonschema validator class for ``schema``: its ``$schema`` draft, or the latest draft when that is unknown
    (jsonschema's own fallback, without its deprecation warning). The request check and output validation both use
    this, so a schema is never checked against one draft and its output against another."""
    from jsonschema import validators  # type: ignore[import-untyped]

    return validators.validator_for(schema, default=validators.Draft202012Validator)


@functools.lru_cache(maxsize=512)
def _schema_problem(text: str) -> str | None:
    """What is wrong with a canonical json_schema constraint (metaschema check, then grammar), memoised."""
    from jsonschema import exceptions

    schema = json.loads(text)["schema"]
    meta = schema.get("$schema") if isinstance(schema, dict) else None
    if meta is not None and not isinstance(meta, str):
        return f"$schema must be a meta-schema URI string, got {type(meta).__name__}"
    try:
        validator_class(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"invalid JSON schema: {exc.message[:500]}"
    problem = grammar_problem(Constraint("json_schema", text))
    return None if problem is None else f"unsupported JSON schema for structured output: {problem}"


@functools.lru_cache(maxsize=256)
def _type_constraint(tp: Any) -> Constraint:
    """A type's constraint; Pydantic's schema generation runs once per type (types are hashable, kept alive)."""
    return _schema_constraint(schema_from_type(tp))


def _from_schema(schema: object) -> Constraint:
    if isinstance(schema, Mapping):
        return _schema_constraint(schema)
    if isinstance(schema, str | bytes | bool | int | float) or not _is_type_form(schema):
        raise InvalidRequestError(
            "schema must be a JSON-schema dict, a Pydantic model class or a Python type, "
            f"got {type(schema).__name__} {schema!r:.80}"
        )
    try:
        return _type_constraint(schema)
    except TypeError as exc:  # an unhashable typing form: no memo
        if "unhashable" not in str(exc):
            raise
        return _schema_constraint(schema_from_type(schema))


def _from_regex(regex: object) -> Constraint:
    if not isinstance(regex, str) or not regex:
        raise InvalidRequestError(f"regex must be a non-empty str, got {regex!r:.80}")
    _utf8(regex, "regex")
    return _regex_constraint(regex)


@functools.lru_cache(maxsize=512)
def _regex_constraint(regex: str) -> Constraint:
    try:
        with warnings.catch_warnings():  # "possible nested set" for [[ or && in a class: valid, not our warning
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(regex)
    except re.error as exc:
        raise InvalidRequestError(f"invalid regex {regex!r:.200}: {exc}") from None
    except (RecursionError, OverflowError, RuntimeError, ValueError) as exc:
        raise InvalidRequestError(f"unsupported regex {regex!r:.200}: {type(exc).__name__}: {exc}") from None
    constraint = Constraint("regex", canonical_json({"kind": "regex", "pattern": regex}))
    problem = grammar_problem(constraint)
    if problem is not None:
        raise InvalidRequestError(f"unsupported regex for structured output: {problem}")
    return constraint


def _from_choices(choices: object) -> Constraint:
    if not isinstance(choices, list | tuple):
        raise InvalidRequestError(f"choices must be a list of str, got {type(choices).__name__}")
    if not choices:
        raise InvalidRequestError("choices must not be empty")
    for choice in choices:
        if not isinstance(choice, str) or not choice:
            raise InvalidRequestError(f"every choice must be a non-empty str, got {choice!r:.80}")
        _utf8(choice, "a choice")
    duplicates = sorted(c for c, n in collections.Counter(choices).items() if n > 1)  # linear, not choices.count
    if duplicates:
        raise InvalidRequestError(f"choices must be distinct; repeated: {duplicates!r:.200}")
    return Constraint("choices", canonical_json({"kind": "choices", "choices": list(choices)}))


def _from_response_format(response_format: object) -> Constraint | None:
    if not isinstance(response_format, Mapping):
        raise InvalidRequestError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _schema_constraint({"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise InvalidRequestError(
                'response_format {"type": "json_schema"} needs "json_schema": {"name": ..., "schema": {...}}'
            )
        name = spec.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME_RE.fullmatch(name)):
            raise InvalidRequestError(f"response_format json_schema name must match [A-Za-z0-9_-]{{1,64}}: {name!r}")
        return _schema_constraint(spec["schema"], name=name)
    raise InvalidRequestError(f"response_format type must be 'json_object', 'json_schema' or 'text', got {kind!r:.80}")


def normalize(
    *, schema: object = None, regex: object = None, choices: object = None, response_format: object = None
) -> Constraint | None:
    """The one constraint among the arguments (None when none is given). Raises InvalidRequestError."""
    given = [
        name
        for name, value in (
            ("schema", schema),
            ("regex", regex),
            ("choices", choices),
            ("response_format", response_format),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise InvalidRequestError(
            f"give at most one of schema, regex, choices, response_format (got {', '.join(given)})"
        )
    if schema is not None:
        return _from_schema(schema)
    if regex is not None:
        return _from_regex(regex)
    if choices is not None:
        return _from_choices(choices)
    if response_format is not None:
        return _from_response_format(response_format)
    return None
