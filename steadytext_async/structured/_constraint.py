"""The :class:`Constraint` value object: one normalized structured-output constraint and its canonical text."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

__all__ = ["Constraint", "ConstraintKind", "canonical_json"]

ConstraintKind = Literal["json_schema", "regex", "choices", "lark"]


def canonical_json(value: object) -> str:
    """Compact JSON with key order preserved (callers order keys themselves), non-ASCII kept, NaN refused."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Constraint:
    """A normalized constraint. ``canonical`` is the whole identity; build instances with ``normalize()``.

    ``canonical`` is a JSON object ``{"kind": ..., <payload>}`` where the payload is ``"schema"`` (a canonical JSON
    schema), ``"pattern"`` (a regex), ``"choices"`` (a list of strings) or ``"grammar"`` (llguidance lark, built
    internally for tool calls), plus ``"name"`` when a
    ``response_format`` named its schema.
    """

    kind: ConstraintKind
    canonical: str

    @property
    def sha256(self) -> str:
        """Hex sha256 of ``canonical``: the constraint's part of cache keys and fingerprints."""
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()

    @cached_property
    def _payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.canonical)
        return data

    @property
    def schema(self) -> dict[str, Any]:
        """The canonical JSON schema (``kind == "json_schema"`` only)."""
        if self.kind != "json_schema":
            raise AttributeError(f"a {self.kind} constraint has no schema")
        schema: dict[str, Any] = self._payload["schema"]
        return schema

    @property
    def pattern(self) -> str:
        """The regex (``kind == "regex"`` only); it must match the whole output."""
        if self.kind != "regex":
            raise AttributeError(f"a {self.kind} constraint has no pattern")
        pattern: str = self._payload["pattern"]
        return pattern

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed outputs, in the caller's order (``kind == "choices"`` only)."""
        if self.kind != "choices":
            raise AttributeError(f"a {self.kind} constraint has no choices")
        return tuple(self._payload["choices"])

    @property
    def grammar(self) -> str:
        """The llguidance lark grammar (``kind == "lark"`` only: tool calls build it, see ``_tools``)."""
        if self.kind != "lark":
            raise AttributeError(f"a {self.kind} constraint has no grammar")
        grammar: str = self._payload["grammar"]
        return grammar

    @property
    def name(self) -> str | None:
        """The schema name given in a ``response_format``, if any."""
        name: str | None = self._payload.get("name")
        return name
