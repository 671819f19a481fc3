"""Exceptions raised by steadytext_async.

Every error this package raises on purpose derives from :class:`SteadyTextError`::

    SteadyTextError
    ├── InvalidRequestError (also ValueError)     bad arguments, caught before any work
    │   └── ModelNotFoundError                    unknown registry name/size, missing local file
    ├── UnsafeModeRequiredError                   a remote model without unsafe_mode=True
    ├── ModelUnavailableError                     no model could be loaded (strict mode, or hub offline)
    ├── WorkerError                               a worker process died or misbehaved mid-request
    └── ConstraintError                           structured output could not be completed

``NotImplementedError`` is raised (not a SteadyTextError) for accepted-but-unbuilt features.
"""

from __future__ import annotations

__all__ = [
    "ConstraintError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "SteadyTextError",
    "UnsafeModeRequiredError",
    "WorkerError",
]


class SteadyTextError(Exception):
    """Root of every error raised by steadytext_async."""


class InvalidRequestError(SteadyTextError, ValueError):
    """An argument is invalid; raised before any work is done."""


class ModelNotFoundError(InvalidRequestError):
    """The requested model name, size or local file does not exist."""


class UnsafeModeRequiredError(SteadyTextError):
    """A remote (best-effort deterministic) model was requested without ``unsafe_mode=True``."""


class ModelUnavailableError(SteadyTextError):
    """No model could be loaded (offline hub, corrupt file, load failure).

    Raised only in strict mode; otherwise generation falls back to deterministic hash-based text.
    """


class WorkerError(SteadyTextError):
    """A local worker process crashed or broke protocol while serving a request."""


class ConstraintError(SteadyTextError):
    """Constrained generation stopped before the constraint was satisfied.

    ``partial_text`` holds what had been generated.
    """

    def __init__(self, message: str, *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text
