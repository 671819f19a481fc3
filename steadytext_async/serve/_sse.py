"""Server-sent events: OpenAI chunk streams ending in ``data: [DONE]``, and the drain on shutdown.

A stream ends in one of three ways: normally (final chunk, optional usage chunk, ``[DONE]``); with an error event
``data: {"error": {...}}`` then ``[DONE]`` (the ``openai`` client raises ``APIError`` on it); or, when the client
disconnects, by cancellation, which closes the SDK stream and so frees the worker within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request

from .._models import Chunk, GenerationResult
from ._errors import HTTPError, error_response
from ._openai import Envelope, stream_chunk, usage_chunk

__all__ = ["ShuttingDown", "or_stop", "sse", "until"]

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"


class ShuttingDown(HTTPError):
    def __init__(self) -> None:
        super().__init__(503, "the server is shutting down; the stream was ended", type="server_shutdown")


def event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


async def or_stop(awaitable: Awaitable[T], stop: asyncio.Event, request: Request) -> T:
    """Await ``awaitable`` unless the server must stop or the client goes away first (then cancel it)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, stopper, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if stopper.done():
            raise ShuttingDown
        raise HTTPError(499, "the client disconnected", type="client_closed_request")
    finally:
        stopper.cancel()
        gone.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until(items: AsyncIterator[T], stop: asyncio.Event) -> AsyncIterator[T]:
    """``items`` until ``stop`` is set; then closes ``items`` (freeing its worker) and raises :class:`ShuttingDown`.

    Cancellation (a client disconnect) and early exit close ``items`` too, after the pending step has unwound.
    """
    stopper = asyncio.ensure_future(stop.wait())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait({step, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise ShuttingDown
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        stopper.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


async def sse(
    env: Envelope,
    first: Chunk | GenerationResult,
    rest: AsyncIterator[Chunk | GenerationResult],
    on_result: Callable[[GenerationResult], None],
) -> AsyncIterator[bytes]:
    """The SSE body of one streamed request (``first`` was taken before the response started)."""
    offset = 0
    try:
        if env.req.kind == "chat":
            yield event(stream_chunk(env, None))
        item: Chunk | GenerationResult | None = first
        while item is not None:
            if isinstance(item, GenerationResult):
                on_result(item)
                yield event(stream_chunk(env, item))
                if env.req.include_usage:
                    yield event(usage_chunk(env, item))
                break
            yield event(stream_chunk(env, item, offset))
            offset += len(item.text)
            item = await anext(rest, None)
    except Exception as exc:  # headers are sent: report it in-band (error_response logs server-side failures)
        yield event(error_response(exc)[1])
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
    yield DONE
