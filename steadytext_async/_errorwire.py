"""Errors across boundaries: one typed record, one registry of the errors that may cross.

An error crosses three boundaries: the worker pipe (``ErrorFrame``, ``Fatal``; pickled), the daemon's event stream
(an ``{"error": ...}`` line; JSON) and ``serve``'s HTTP error bodies (status, OpenAI ``type`` and ``code``). Each
side turns the exception into an :class:`ErrorRecord` with :func:`to_record`, and the receiving side turns the record
back into an exception with :func:`from_record`; ``serve`` reads its status from the same registry (:func:`kind_of`).

The registry :data:`KINDS` names every :class:`~steadytext_async.SteadyTextError` subclass that may cross, by class
name. An error is recorded under its nearest registered class (a subclass of :class:`WorkerError` crosses as
``WorkerError``); anything else (a ``ValueError`` in a worker, a server's own error) keeps its class name as the kind,
and a kind the registry does not know is read back as the fallback, :data:`FALLBACK` (``WorkerError``), its name
kept in the message. A name is only ever looked up in :data:`KINDS`: nothing is imported or evaluated by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import _exceptions as _e
from ._exceptions import ConstraintError, SteadyTextError, WorkerError

__all__ = ["FALLBACK", "KINDS", "ErrorRecord", "Kind", "from_record", "kind_of", "to_record"]


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """A registered error: its class, and what ``serve`` answers for it."""

    cls: type[SteadyTextError]
    status: int  # the HTTP status
    type: str  # the OpenAI error body's "type"
    code: str | None = None  # its "code" (a RemoteStatusError's is the upstream status)


_INVALID = "invalid_request_error"
_UPSTREAM = "upstream_error"
KINDS: dict[str, Kind] = {
    k.cls.__name__: k
    for k in (
        Kind(_e.InvalidRequestError, 400, _INVALID),
        Kind(_e.ModelNotFoundError, 404, _INVALID, "model_not_found"),
        Kind(_e.UnknownProviderError, 400, _INVALID),
        Kind(_e.UnsafeModeRequiredError, 403, "permission_error", "remote_disabled"),
        Kind(_e.ConsentRequiredError, 403, "permission_error", "remote_disabled"),
        Kind(ConstraintError, 422, "constraint_error", "constraint_incomplete"),
        Kind(_e.ModelUnavailableError, 503, "model_unavailable"),
        Kind(WorkerError, 503, "worker_error"),
        Kind(_e.RemoteError, 502, _UPSTREAM),
        Kind(_e.MissingAPIKeyError, 502, _UPSTREAM),
        Kind(_e.RemoteConnectionError, 502, _UPSTREAM),
        Kind(_e.RemoteTimeoutError, 502, _UPSTREAM),
        Kind(_e.RemoteProtocolError, 502, _UPSTREAM),
        Kind(_e.RemoteStatusError, 502, _UPSTREAM),
        Kind(_e.RemoteBadRequestError, 502, _UPSTREAM),
        Kind(_e.RemoteAuthenticationError, 502, _UPSTREAM),
        Kind(_e.RemoteNotFoundError, 502, _UPSTREAM),
        Kind(_e.RemoteRateLimitError, 502, _UPSTREAM),
        Kind(_e.RemoteServerError, 502, _UPSTREAM),
    )
}
FALLBACK: type[SteadyTextError] = WorkerError  # what a kind the registry does not know is read back as
_BY_CLASS: dict[type, Kind] = {k.cls: k for k in KINDS.values()}


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An error as it crosses a boundary (pickled on the worker pipe, JSON on the daemon's stream)."""

    kind: str  # a key of KINDS, or the class name of an error the registry does not know
    message: str
    partial_text: str | None = None  # a ConstraintError's output so far
    retryable: bool = False  # the sender stopped (e.g. a daemon shutting down): run the request elsewhere

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "message": self.message,
            "partial_text": self.partial_text,
            "retryable": self.retryable,
        }

    @classmethod
    def from_json(cls, body: Any) -> ErrorRecord:
        """A record from its JSON object; TypeError if it is not one."""
        if not isinstance(body, dict):
            raise TypeError("an error is an object")
        kind, message, partial, retryable = (body.get(k) for k in ("type", "message", "partial_text", "retryable"))
        if not isinstance(kind, str) or not isinstance(message, str) or not isinstance(partial, str | None):
            raise TypeError("an error has a string type and message")
        return cls(kind, message, partial, retryable is True)


def kind_of(exc: BaseException) -> Kind | None:
    """The registry entry of ``exc``'s nearest registered class; None when it is not a registered error."""
    for cls in type(exc).__mro__:
        kind = _BY_CLASS.get(cls)
        if kind is not None:
            return kind
    return None


def to_record(exc: BaseException, *, retryable: bool = False) -> ErrorRecord:
    kind = kind_of(exc)
    partial = exc.partial_text if isinstance(exc, ConstraintError) else None
    return ErrorRecord(type(exc).__name__ if kind is None else kind.cls.__name__, str(exc), partial, retryable)


def from_record(record: ErrorRecord, *, origin: str) -> SteadyTextError:
    """The exception ``record`` stands for, to raise on this side (``origin``, e.g. ``"worker"``, prefixes its
    message; a ConstraintError's message is the caller's and stays as it was, with its partial text)."""
    kind = KINDS.get(record.kind)
    if kind is None:
        return FALLBACK(f"{origin}: {record.kind}: {record.message}")
    if kind.cls is ConstraintError:
        return ConstraintError(record.message, partial_text=record.partial_text or "")
    return kind.cls(f"{origin}: {record.message}")
