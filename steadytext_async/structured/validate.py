"""Output checks: does a text satisfy a constraint, and the typed ``parse`` convenience."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._exceptions import ConstraintError
from ._constraint import Constraint
from .normalize import _is_type_form, normalize, validator_class

if TYPE_CHECKING:
    from llguidance import LLTokenizer

__all__ = ["check_output", "parse", "regex_fullmatch", "to_value"]

T = TypeVar("T")


def _schema_errors(schema: dict[str, Any], value: Any) -> str | None:
    cls = validator_class(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{where}: {error.message}"


class _ByteVocabulary:
    """A tokenizer whose tokens are the 256 single bytes (plus an end token): text is matched byte by byte."""

    def __init__(self) -> None:
        self.eos_token_id = 256
        self.bos_token_id = None
        self.tokens = [bytes([i]) for i in range(256)] + [b""]
        self.special_token_ids = [256]

    def __call__(self, data: bytes) -> list[int]:
        return list(data)


@functools.cache
def _byte_tokenizer() -> LLTokenizer:
    from llguidance import LLTokenizer, TokenizerWrapper

    return LLTokenizer(TokenizerWrapper(_ByteVocabulary()), slices=[])


@functools.lru_cache(maxsize=128)
def _regex_grammar(pattern: str) -> str:
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_regex(pattern)


def regex_fullmatch(pattern: str, text: str) -> bool:
    """Does ``text`` match ``pattern`` as a whole? In linear time, with the engine that generates it.

    llguidance's lexer is a lazily built DFA, so time is linear in the text whatever the pattern (Python's
    backtracking ``re`` took seconds, doubling per character, on ``(a+)+`` against ``"a" * 25 + "!"`` while holding
    the GIL). It is also the regex dialect generation uses, so validation and generation cannot disagree.
    """
    from llguidance import LLMatcher

    data = list(text.encode("utf-8", "surrogatepass"))
    matcher = LLMatcher(_byte_tokenizer(), _regex_grammar(pattern), log_level=0)
    return matcher.try_consume_tokens(data) == len(data) and matcher.is_accepting()


def check_output(constraint: Constraint, text: str) -> None:
    """Raise :class:`ConstraintError` (with ``partial_text=text``) unless ``text`` satisfies ``constraint``."""
    if constraint.kind == "regex":
        if not regex_fullmatch(constraint.pattern, text):
            raise ConstraintError(f"output does not match regex {constraint.pattern!r:.200}", partial_text=text)
    elif constraint.kind == "choices":
        if text not in constraint.choices:
            raise ConstraintError("output is not one of the choices", partial_text=text)
    else:
        try:
            value = json.loads(text)
        except RecursionError:
            raise ConstraintError("output is JSON nested too deeply to check", partial_text=text) from None
        except ValueError as exc:
            raise ConstraintError(f"output is not valid JSON: {exc}", partial_text=text) from exc
        try:
            problem = _schema_errors(constraint.schema, value)
        except RecursionError:
            raise ConstraintError("output is JSON nested too deeply to check", partial_text=text) from None
        if problem is not None:
            raise ConstraintError(f"output does not match the JSON schema: {problem}", partial_text=text)


@overload
def parse(source: type[T], text: str) -> T: ...
@overload
def parse(source: Any, text: str) -> Any: ...
def parse(source: Any, text: str) -> Any:
    """``text`` checked against ``source`` (what was passed as ``schema=``), returned as a Python value.

    A Pydantic model, dataclass, TypedDict or other type gives a validated instance of it; a dict schema gives the
    decoded JSON value. Raises :class:`ConstraintError` when ``text`` does not satisfy the schema.
    """
    constraint = normalize(schema=source)
    assert constraint is not None
    check_output(constraint, text)
    return to_value(source, text)


def to_value(source: Any, text: str) -> Any:
    """``text``, already checked against ``source``'s constraint, as a Python value: an instance of a type
    (Pydantic builds it), or the decoded JSON for a dict schema. Raises :class:`ConstraintError`."""
    if not _is_type_form(source):
        return json.loads(text)
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = _adapter(source)
    except TypeError:  # an unhashable typing form: no memo
        adapter = TypeAdapter(source)
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        raise ConstraintError(f"output does not validate as {source!r}: {exc}", partial_text=text) from exc


@functools.lru_cache(maxsize=256)
def _adapter(source: Any) -> Any:
    """One Pydantic TypeAdapter per type (building one generates its core schema)."""
    from pydantic import TypeAdapter

    return TypeAdapter(source)
