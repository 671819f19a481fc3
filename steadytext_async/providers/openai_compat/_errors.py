"""The one place where a remote call's failures become :class:`~steadytext_async.RemoteError` subclasses.

Like httpx's ``map_httpcore_exceptions``: :meth:`CallErrors.mapped` wraps every await of a call and translates
httpx errors, deadline expiry, SSE errors, oversized bodies and wire-format problems; :meth:`CallErrors.build`
builds every error with its final message (redacted) and attempt count, so nothing is patched afterwards.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import SSEError

from ..._exceptions import (
    RemoteConnectionError,
    RemoteError,
    RemoteProtocolError,
    RemoteRateLimitError,
    RemoteServerError,
    RemoteTimeoutError,
)
from ._secrets import Redactor

__all__ = [
    "BodyTooLargeError",
    "CallErrors",
    "ReportedError",
    "WireError",
    "body_message",
    "error_message",
    "retry_after",
    "retryable",
]

MAX_ERROR_BODY = 2000


MAX_MESSAGE = 1000  # characters of an error message, cut after redaction (so a cut never splits a secret)
_EXCERPT = 200


class WireError(Exception):
    """Internal: the response broke the wire format (mapped to RemoteProtocolError). ``excerpt``: the offending
    data, shown (redacted, then shortened) in the public message."""

    def __init__(self, message: str, excerpt: str | None = None) -> None:
        super().__init__(message)
        self.excerpt = excerpt


class ReportedError(Exception):
    """Internal: the server reported an error inside a 200 response (mapped to RemoteError); the whole text."""


class BodyTooLargeError(Exception):
    """Internal: the response body passed ``RemoteOptions.max_response_bytes`` (mapped to RemoteProtocolError)."""


def retryable_cls(cls: type[BaseException]) -> bool:
    """429, 5xx and connection problems are worth another attempt; every other error is final."""
    return issubclass(cls, RemoteRateLimitError | RemoteServerError | RemoteConnectionError)


def retryable(exc: BaseException) -> bool:
    return retryable_cls(type(exc))


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent or bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(error: object) -> str | None:
    """The message of an OpenAI-style ``error`` value (a dict with ``message``, or a string)."""
    message = error.get("message") if isinstance(error, dict) else error
    return message[:500] if isinstance(message, str) and message else None


def body_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the (shortened) text."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text[:500]
    return (error_message(data.get("error")) if isinstance(data, dict) else None) or text[:500]


class CallErrors:
    """Builds and maps the errors of one remote call. ``attempts``: HTTP requests sent so far.

    ``give_up`` (set by the retry policy) tells, for a retryable error of the current attempt, whether no retry
    will follow; the message then says so.
    """

    def __init__(self, provider: str, redact: Redactor, *, deadline_s: float, timeout_s: float) -> None:
        self.provider = provider
        self.redact = redact
        self.deadline_s = deadline_s
        self.timeout_s = timeout_s
        self.attempts = 0
        self.give_up: Callable[[type[RemoteError], float | None], bool] = lambda cls, after: True

    def build(self, cls: type[RemoteError], message: str, *, opening: bool = False, **extra: Any) -> RemoteError:
        """``cls(message)``, redacted, with the attempt count (and "gave up" when no retry follows)."""
        n = self.attempts
        if opening and (
            (retryable_cls(cls) and self.give_up(cls, extra.get("retry_after"))) or (not retryable_cls(cls) and n > 1)
        ):
            message += f" (gave up after {n} attempt{'s' if n != 1 else ''})"
        if "body" in extra:
            extra["body"] = self.redact(extra["body"])
        text = self.redact(f"{self.provider}: {message}")
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE] + "..."
        return cls(text, provider=self.provider, attempts=n, **extra)

    @contextlib.contextmanager
    def mapped(self, doing: str, *, opening: bool = False) -> Iterator[None]:
        """Translate whatever escapes the block; ``doing`` says when ("talking to <url>", "reading", "streaming").
        ``opening``: the block sends a request, so a retryable error may be retried (see :meth:`build`)."""
        try:
            yield
        except RemoteError:
            raise
        except TimeoutError:
            where = "" if opening else f" while {doing}"
            raise self.build(
                RemoteTimeoutError, f"the overall deadline of {self.deadline_s:g}s expired{where}", opening=opening
            ) from None
        except httpx.TimeoutException as exc:
            if opening:
                what = f"{type(exc).__name__} while {doing}"
            elif doing == "streaming":
                what = f"the stream stalled (no data for {self.timeout_s:g}s)"
            else:
                what = f"{doing} the response timed out"
            raise self.build(RemoteTimeoutError, what, opening=opening) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise self.build(
                RemoteConnectionError,
                f"the connection broke while {doing} ({type(exc).__name__}: {exc})",
                opening=opening,
            ) from None
        except SSEError as exc:
            raise self.build(RemoteProtocolError, f"malformed event stream: {exc}") from None
        except BodyTooLargeError as exc:
            raise self.build(RemoteProtocolError, str(exc)) from None
        except ReportedError as exc:
            raise self.build(RemoteError, f"the server reported an error: {exc}") from None
        except WireError as exc:
            shown = f": {self.redact(exc.excerpt)[:_EXCERPT]!r}" if exc.excerpt else ""
            raise self.build(RemoteProtocolError, f"{exc}{shown}") from None
