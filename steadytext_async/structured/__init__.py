"""Structured output: one constraint object for schema / regex / choices / response_format, enforced locally by
token masks (llguidance) and translated for remote providers; every output is validated before it is returned.

``MatcherFactory`` and ``TokenMatcher`` (numpy, llama.cpp), ``check_output`` and ``parse`` load on first access, so
importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._constraint import Constraint, ConstraintKind
from .normalize import normalize, schema_from_type

if TYPE_CHECKING:
    from .local import MatcherFactory, TokenMatcher
    from .validate import check_output, parse

__all__ = [
    "Constraint",
    "ConstraintKind",
    "MatcherFactory",
    "TokenMatcher",
    "check_output",
    "normalize",
    "parse",
    "schema_from_type",
]


def __getattr__(name: str) -> Any:
    if name in ("MatcherFactory", "TokenMatcher"):
        from . import local

        return getattr(local, name)
    if name in ("check_output", "parse"):  # not needed to build a request (start-up time)
        from . import validate

        return getattr(validate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
