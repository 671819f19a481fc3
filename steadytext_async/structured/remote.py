"""Constraint -> the request-body fragment for an OpenAI-compatible provider, table-driven by capability.

JSON schemas go out as ``response_format`` ``json_schema`` (``strict`` when the provider has it and the schema fits
OpenAI's strict rules); choices as an enum schema, or the provider's own choice extension; regexes only through a
guided-decoding extension (vLLM's ``guided_regex``), otherwise :class:`InvalidRequestError`. The provider's raw
text is turned back into our plain output with :meth:`RemoteConstraint.output`; callers then ``check_output`` it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import ConstraintError, InvalidRequestError
from ._constraint import Constraint
from ._keywords import subschemas
from .grammar import close_objects

__all__ = ["PROVIDER_CAPABILITIES", "RemoteCapabilities", "RemoteConstraint", "translate"]

_CHOICE_KEY = "choice"
_DEFAULT_NAME = "output"


@dataclass(frozen=True)
class RemoteCapabilities:
    """What a provider's API can enforce."""

    strict_json_schema: bool = False  # response_format json_schema with "strict": true
    object_root_only: bool = False  # json_schema must have an object at the root
    regex_field: str | None = None  # body field taking a regex (vLLM: "guided_regex")
    choice_field: str | None = None  # body field taking a list of strings (vLLM: "guided_choice")


PROVIDER_CAPABILITIES: dict[str, RemoteCapabilities] = {
    "openai": RemoteCapabilities(strict_json_schema=True, object_root_only=True),
    "vllm": RemoteCapabilities(regex_field="guided_regex", choice_field="guided_choice"),
    "openai_compat": RemoteCapabilities(),
}


@dataclass(frozen=True)
class RemoteConstraint:
    """A translated constraint: ``body`` merges into the request; ``output`` recovers our plain text."""

    body: dict[str, Any]
    unwrap: Literal["none", "choice_object", "json_string"] = "none"

    def output(self, text: str) -> str:
        """The provider's text as our output (the JSON document, or the bare choice)."""
        if self.unwrap == "none":
            return text
        try:
            value = json.loads(text)
            if self.unwrap == "choice_object":
                value = value[_CHOICE_KEY]
        except (ValueError, TypeError, KeyError) as exc:
            raise ConstraintError(
                f"provider returned an unexpected structured answer: {exc}", partial_text=text
            ) from exc
        if not isinstance(value, str):
            raise ConstraintError("provider returned a non-string choice", partial_text=text)
        return value


def _strict_ok(schema: Any) -> bool:
    """OpenAI strict mode: every object closed (after ``close_objects``) and lists all its properties as required."""
    if not isinstance(schema, dict):
        return True
    props = schema.get("properties")
    if isinstance(props, dict) and set(schema.get("required", [])) != set(props):
        return False
    if schema.get("type") == "object" and schema.get("additionalProperties", True) is not False:
        return False
    return all(_strict_ok(sub) for sub in subschemas(schema))


def _json_schema_body(schema: dict[str, Any], name: str | None, caps: RemoteCapabilities) -> dict[str, Any]:
    closed = close_objects(schema)
    spec: dict[str, Any] = {"name": name or _DEFAULT_NAME, "schema": closed}
    if caps.strict_json_schema:
        spec["strict"] = _strict_ok(closed)
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


@functools.lru_cache(maxsize=256)
def translate(constraint: Constraint, provider: str | RemoteCapabilities) -> RemoteConstraint:
    """The request fragment for ``constraint`` on ``provider`` (a name in PROVIDER_CAPABILITIES, or capabilities).

    Memoised: a request's body and its stream reuse one translation (the result is shared: never mutate it)."""
    if isinstance(provider, str):
        if provider not in PROVIDER_CAPABILITIES:
            raise InvalidRequestError(
                f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDER_CAPABILITIES))}"
            )
        name, caps = provider, PROVIDER_CAPABILITIES[provider]
    else:
        name, caps = "this provider", provider
    if constraint.kind == "regex":
        if caps.regex_field is None:
            raise InvalidRequestError(
                f"{name} cannot constrain output to a regex; use a local model, or schema=/choices= instead"
            )
        return RemoteConstraint({caps.regex_field: constraint.pattern})
    if constraint.kind == "choices":
        if caps.choice_field is not None:
            return RemoteConstraint({caps.choice_field: list(constraint.choices)})
        enum = {"type": "string", "enum": list(constraint.choices)}
        if caps.object_root_only:
            wrapped = {"type": "object", "properties": {_CHOICE_KEY: enum}, "required": [_CHOICE_KEY]}
            return RemoteConstraint(_json_schema_body(wrapped, "choice", caps), unwrap="choice_object")
        return RemoteConstraint(_json_schema_body(enum, "choice", caps), unwrap="json_string")
    schema = constraint.schema
    if caps.object_root_only and schema.get("type") != "object":
        raise InvalidRequestError(f"{name} needs a JSON schema with an object at the root (got {schema.get('type')!r})")
    return RemoteConstraint(_json_schema_body(schema, constraint.name, caps))
