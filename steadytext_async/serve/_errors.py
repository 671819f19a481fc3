"""Errors -> OpenAI-style JSON bodies and HTTP statuses, at one point (:func:`error_response`).

A server-side failure (a worker error, a model that cannot load, anything unexpected) is logged exactly once, under
an error id, wherever it is reported: an HTTP error response, an in-band SSE error event, or the daemon endpoint's
error line (:func:`log_failure`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from .._errorwire import kind_of
from .._exceptions import ConstraintError, RemoteStatusError

__all__ = ["HTTPError", "error_response", "log_failure"]

logger = logging.getLogger("steadytext_async")


class HTTPError(Exception):
    """An error raised by the server itself (auth, malformed JSON, routing) with its status and OpenAI type."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code


def _classify(exc: BaseException) -> tuple[int, str, str | None]:
    """Status, OpenAI type and code: the server's own errors', else the error registry's (_errorwire.KINDS)."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.type, exc.code
    kind = kind_of(exc)
    if kind is not None:
        code = str(exc.status_code) if isinstance(exc, RemoteStatusError) else kind.code
        return kind.status, kind.type, code
    if isinstance(exc, NotImplementedError):
        return 501, "not_implemented", None
    return 500, "internal_error", None


# Server-side failures: their messages hold paths, pids and worker stderr, which are the operator's, not the caller's.
_PRIVATE = {
    "worker_error": "a worker failed while generating",
    "model_unavailable": "the model could not be loaded",
    "internal_error": "internal server error",
}


def _log(kind: str, exc: BaseException) -> str:
    ref = uuid.uuid4().hex[:12]
    logger.log(
        logging.ERROR if kind == "internal_error" else logging.WARNING,
        "serve: %s (error id %s): %s",
        kind,
        ref,
        exc,
        exc_info=exc if kind == "internal_error" else None,
    )
    return ref


def log_failure(exc: BaseException) -> str | None:
    """Log ``exc`` once if it is a server-side failure; its error id, else None (a caller's error is not logged)."""
    kind = _classify(exc)[1]
    return _log(kind, exc) if kind in _PRIVATE else None


def error_response(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(status, {"error": {"message", "type", "param", "code"}})`` for ``exc``. Server-side failures get a generic
    message and an error id; the detail goes to the server's log under that id (once)."""
    status, kind, code = _classify(exc)
    message = str(exc)
    if kind in _PRIVATE:
        message = f"{_PRIVATE[kind]} (error id {_log(kind, exc)}; the details are in the server's log)"
    error: dict[str, Any] = {"message": message, "type": kind, "param": None, "code": code}
    if isinstance(exc, ConstraintError):
        error["partial_text"] = exc.partial_text
    return status, {"error": error}
