"""The one check every piece of caller text passes: it must be encodable as UTF-8."""

from __future__ import annotations

from ._exceptions import InvalidRequestError

__all__ = ["check_text"]


def check_text(name: str, value: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate (e.g. from a bad decode) cannot reach a model or a file."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{name} is not valid Unicode text: {exc.reason} at index {exc.start} ({value[exc.start]!r})"
        ) from None
