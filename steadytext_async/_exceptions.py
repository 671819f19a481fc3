"""Exceptions raised by steadytext_async.

Every error this package raises on purpose derives from :class:`SteadyTextError`::

    SteadyTextError
    ├── InvalidRequestError (also ValueError)     bad arguments, caught before any work
    │   ├── ModelNotFoundError                    unknown registry name/size, missing local file
    │   └── UnknownProviderError                  "provider:model" names no preset or registered provider
    ├── UnsafeModeRequiredError                   a remote model without unsafe_mode=True
    │   └── ConsentRequiredError                  replaying a remote/non-embedded recording without allow_*
    ├── ModelUnavailableError                     no model could be loaded (strict, constrained or mid-stream)
    ├── WorkerError                               a worker process died or misbehaved mid-request
    ├── ConstraintError                           structured output could not be completed
    └── RemoteError                               a remote provider call failed (.provider, .attempts)
        ├── MissingAPIKeyError                    the provider's API-key variable is unset; nothing was sent
        ├── RemoteConnectionError                 could not connect, or the connection broke
        │   └── RemoteTimeoutError                a timeout or the overall deadline expired
        ├── RemoteProtocolError                   malformed/oversized response or SSE, a stream cut before [DONE]
        └── RemoteStatusError                     an HTTP error status (.status_code, .request_id, .body)
            ├── RemoteBadRequestError             400, 422 and other 4xx not listed below
            ├── RemoteAuthenticationError         401, 403
            ├── RemoteNotFoundError               404 (often: unknown model id)
            ├── RemoteRateLimitError              429 (.retry_after)
            └── RemoteServerError                 5xx (.retry_after)
"""

from __future__ import annotations

__all__ = [
    "ConsentRequiredError",
    "ConstraintError",
    "InvalidRequestError",
    "MissingAPIKeyError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "RemoteAuthenticationError",
    "RemoteBadRequestError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteNotFoundError",
    "RemoteProtocolError",
    "RemoteRateLimitError",
    "RemoteServerError",
    "RemoteStatusError",
    "RemoteTimeoutError",
    "SteadyTextError",
    "UnknownProviderError",
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


class ConsentRequiredError(UnsafeModeRequiredError):
    """Replaying a recording would call a remote provider (``allow_remote=True`` needed) or download/load a model
    other than the embedded one (``allow_download=True`` needed). Raised before any network traffic."""


class ModelUnavailableError(SteadyTextError):
    """No model could be loaded (offline hub, corrupt file, load failure).

    Raised in strict mode, for a constrained request (fallback text cannot satisfy a constraint) and when the
    model fails after output has started; otherwise generation falls back to deterministic hash-based text.
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


class UnknownProviderError(InvalidRequestError):
    """``model="provider:model_id"`` names a provider that is neither a preset nor registered."""


class RemoteError(SteadyTextError):
    """A call to a remote provider failed. ``attempts`` counts the HTTP requests sent (0: none was sent)."""

    def __init__(self, message: str, *, provider: str | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.provider = provider
        self.attempts = attempts


class MissingAPIKeyError(RemoteError):
    """The provider needs an API key and its environment variable (``env_var``) is unset or empty."""

    def __init__(self, message: str, *, provider: str | None = None, env_var: str | None = None) -> None:
        super().__init__(message, provider=provider, attempts=0)
        self.env_var = env_var


class RemoteConnectionError(RemoteError):
    """The connection could not be made or broke before a complete response arrived."""


class RemoteTimeoutError(RemoteConnectionError):
    """A connect/read/write timeout, or the overall deadline, expired."""


class RemoteProtocolError(RemoteError):
    """The response broke the OpenAI wire format (bad JSON or SSE, missing fields, no finish_reason before the end),
    passed ``RemoteOptions.max_response_bytes``, or held more output than ``max_new_tokens`` allows."""


class RemoteStatusError(RemoteError):
    """The server answered with an HTTP error status. ``body`` is the (truncated, redacted) response text."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        attempts: int = 0,
        status_code: int = 0,
        request_id: str | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, attempts=attempts)
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after


class RemoteBadRequestError(RemoteStatusError):
    """400, 422 or another 4xx without its own class: the request was refused; not retried."""


class RemoteAuthenticationError(RemoteStatusError):
    """401 or 403: the API key is missing, wrong or lacks permission; not retried."""


class RemoteNotFoundError(RemoteStatusError):
    """404: usually an unknown model id or a wrong base URL; not retried."""


class RemoteRateLimitError(RemoteStatusError):
    """429: rate limited; retried after ``retry_after`` seconds when the server says so."""


class RemoteServerError(RemoteStatusError):
    """5xx: the server failed; retried."""


def status_class(status: int) -> type[RemoteStatusError]:
    """The :class:`RemoteStatusError` subclass of an HTTP error ``status`` (as their docstrings say)."""
    if status in (401, 403):
        return RemoteAuthenticationError
    if status == 404:
        return RemoteNotFoundError
    if status == 429:
        return RemoteRateLimitError
    if status >= 500:
        return RemoteServerError
    if 400 <= status < 500:
        return RemoteBadRequestError
    return RemoteStatusError
