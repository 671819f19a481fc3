"""HTTP for the OpenAI-compatible provider: one POST, a size-capped body, and its SSE events.

Every body is read through :class:`CappedBody`, which counts decoded bytes as they arrive and stops at
``RemoteOptions.max_response_bytes``, so neither a huge JSON document nor an endless SSE line is ever buffered
whole. Errors escape as httpx/SSE/internal exceptions; ``_errors.CallErrors.mapped`` translates them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from ._errors import MAX_ERROR_BODY, BodyTooLargeError

__all__ = ["CappedBody", "capped", "drain", "events", "is_sse", "read_error_body"]

_DRAIN_GRACE = 1.0  # seconds to read the end of a body after [DONE], so its connection can be reused


class CappedBody(httpx.AsyncByteStream):
    """The decoded bytes of ``source``, failing with BodyTooLargeError past ``limit`` bytes."""

    def __init__(self, source: httpx.Response, limit: int) -> None:
        self._source = source
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self._source.aiter_bytes():
            total += len(chunk)
            if total > self._limit:
                raise BodyTooLargeError(
                    f"the response body passed {self._limit} bytes (RemoteOptions.max_response_bytes)"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._source.aclose()


def capped(response: httpx.Response, limit: int) -> httpx.Response:
    """A response reading ``response``'s decoded body through :class:`CappedBody` (closing it closes both)."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding",)]
    return httpx.Response(
        response.status_code,
        headers=headers,
        stream=CappedBody(response, limit),
        request=response.request,
        extensions=response.extensions,
    )


def is_sse(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "text/event-stream" in content_type or "json" not in content_type


async def read_error_body(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> str:
    """The first ``limit`` bytes of an error response (best effort), decoded."""
    raw = b""
    try:
        async for part in response.aiter_bytes():
            raw += part
            if len(raw) >= limit:
                break
    except httpx.HTTPError:
        pass
    return raw[:limit].decode("utf-8", errors="replace")


def events(response: httpx.Response) -> AsyncIterator[Any]:
    """The SSE events of ``response`` (an async generator: close it when done)."""
    return EventSource(response).aiter_sse()


async def drain(source: AsyncIterator[Any], deadline: float) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body); give up quietly after a short grace."""
    grace = min(deadline, asyncio.get_running_loop().time() + _DRAIN_GRACE)
    with contextlib.suppress(TimeoutError, httpx.HTTPError, SSEError, BodyTooLargeError):
        async with asyncio.timeout_at(grace):
            async for _ in source:
                pass
