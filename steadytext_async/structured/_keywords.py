"""Where JSON Schema keywords hold subschemas, so walkers never mistake data or property names for schemas."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["map_subschemas", "subschemas"]

MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
VALUE_KEYWORDS = frozenset(
    {
        "items",
        "additionalProperties",
        "additionalItems",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def map_subschemas(schema: Mapping[str, Any], fn: Callable[[Any], Any], *, sort_maps: bool = False) -> dict[str, Any]:
    """A copy of ``schema`` with ``fn`` applied to each direct subschema; other values are kept as they are.

    With ``sort_maps``, name->schema maps other than ``properties`` (whose order is generation order) are sorted.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in MAP_KEYWORDS and isinstance(value, Mapping):
            names = sorted(value) if sort_maps and key != "properties" else list(value)
            out[key] = {name: fn(value[name]) for name in names}
        elif key in VALUE_KEYWORDS:
            out[key] = fn(value)
        elif key in LIST_KEYWORDS and isinstance(value, list | tuple):
            out[key] = [fn(sub) for sub in value]
        else:
            out[key] = value
    return out


def subschemas(schema: Mapping[str, Any]) -> Iterator[Any]:
    """The direct subschemas of ``schema``."""
    for key, value in schema.items():
        if key in MAP_KEYWORDS and isinstance(value, Mapping):
            yield from value.values()
        elif key in VALUE_KEYWORDS:
            yield value
        elif key in LIST_KEYWORDS and isinstance(value, list | tuple):
            yield from value
