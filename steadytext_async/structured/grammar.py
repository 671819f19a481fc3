r"""Constraint -> llguidance grammar text, and the check that llguidance supports it.

Generation is deliberately narrower than validation, never wider: objects that list ``properties`` and say nothing
about ``additionalProperties`` get ``additionalProperties: false`` (JSON Schema allows extra keys, but generating
them only wastes tokens), JSON is emitted on one line in ``json.dumps`` style (``", "`` and ``": "``, no other
whitespace) so a greedy model cannot loop on whitespace, and a regex's ``\d`` outside brackets generates ASCII
digits only (Python's and Rust's ``\d`` also match every Unicode decimal digit: a byte-level model asked for a
phone number wrote U+1FBF8 "segmented digit eight"s). Everything generated still validates against the caller's
schema or pattern.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._constraint import Constraint
from ._keywords import map_subschemas

if TYPE_CHECKING:
    from llguidance import LLTokenizer
    from llguidance._lib import JsonCompileOptions

__all__ = ["JSON_OPTIONS", "ascii_digits", "choices_regex", "close_objects", "grammar_for", "grammar_problem"]

JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    # Pydantic writes discriminated unions as oneOf; their branches exclude each other, so anyOf generates the same
    # language. The final validation still checks oneOf exactly.
    "coerce_one_of": True,
}


def close_objects(schema: Any, *, top: bool = True) -> Any:
    """A copy of ``schema`` where objects with ``properties`` but no word on extra keys forbid them.

    Schemas combined with ``allOf`` (and their direct members) stay open: their properties may be split between
    the members, and closing each would make them exclude one another.
    """
    if not isinstance(schema, dict):
        return schema
    out = map_subschemas(schema, close_objects)
    if isinstance(schema.get("allOf"), list):
        out["allOf"] = [close_objects(sub, top=False) for sub in schema["allOf"]]
    opened = {"additionalProperties", "patternProperties", "unevaluatedProperties", "allOf"} & set(out)
    if top and "properties" in out and not opened:
        out["additionalProperties"] = False
    return out


def _escape_char(ch: str) -> str:
    return ch if ch.isascii() and ch.isalnum() else f"\\x{{{ord(ch):x}}}"


def choices_regex(choices: tuple[str, ...]) -> str:
    """A regex (Rust regex-syntax) matching exactly the given strings."""
    return "|".join("(?:" + "".join(_escape_char(ch) for ch in choice) + ")" for choice in choices)


def ascii_digits(pattern: str) -> str:
    """``pattern`` with every ``\\d`` outside a bracket class written ``[0-9]`` (a subset: what it generates still
    matches the original). Inside a class ``\\d`` is kept: in ``[^\\d]`` narrowing it would widen the class."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append("[0-9]" if pair == "\\d" and depth == 0 else pair)
            i += 2
            continue
        if ch == "[":
            depth += 1
            out.append(ch)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a ']' first in a class is a literal
                out.append("]")
                i += 1
            continue
        if ch == "]" and depth:
            depth -= 1
        out.append(ch)
        i += 1
    return "".join(out)


def grammar_for(constraint: Constraint) -> str:
    """The llguidance grammar (serialized) that generates ``constraint``."""
    from llguidance import LLMatcher  # imported on first use: ~50 ms, and only constrained calls need it

    if constraint.kind == "json_schema":
        return LLMatcher.grammar_from_json_schema(json.dumps(close_objects(constraint.schema)), defaults=JSON_OPTIONS)
    if constraint.kind == "regex":
        return LLMatcher.grammar_from_regex(ascii_digits(constraint.pattern))
    return LLMatcher.grammar_from_regex(choices_regex(constraint.choices))


def grammar_problem(constraint: Constraint, tokenizer: LLTokenizer | None = None) -> str | None:
    """Why llguidance cannot enforce ``constraint`` (its own message), or None when it can."""
    from llguidance import LLMatcher

    try:
        grammar = grammar_for(constraint)
    except ValueError as exc:
        return str(exc)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    return "; ".join(messages) if is_error else None
