"""OpenAI-compatible remote provider, split by concern (httpx is imported on first use of the provider).

- ``_wire``: request bodies, response/stream parsing, finish reasons, the output budget;
- ``_errors``: the one translation point from httpx/SSE/wire failures to the ``RemoteError`` tree;
- ``_retry``: which failures are retried, waits (``Retry-After``, backoff), giving up (tenacity runs it);
- ``_transport``: one POST, size-capped bodies, SSE events;
- ``_secrets``: ``SecretStr`` keys, credential-free base URLs, redaction, the cache scope;
- ``_provider``: :class:`OpenAICompatProvider`, which ties them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._provider import OpenAICompatProvider
    from ._wire import build_body, remote_constraint

__all__ = ["OpenAICompatProvider", "build_body", "remote_constraint"]


def __getattr__(name: str) -> Any:
    if name == "OpenAICompatProvider":
        from ._provider import OpenAICompatProvider

        return OpenAICompatProvider
    if name in ("build_body", "remote_constraint"):
        from . import _wire

        return getattr(_wire, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
