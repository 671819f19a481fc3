"""Close loop-bound resources while their event loop shuts down.

An httpx connection belongs to the event loop that opened it and can only be closed there. A script that calls
``asyncio.run(agenerate(..., model="provider:model"))`` twice gets a router, and so a connection pool, per loop;
without this module the first pool would be dropped open when its loop ends (a ``ResourceWarning`` per socket).

``asyncio.run``, ``asyncio.Runner``, ``uvloop.run`` and pytest-asyncio all call ``loop.shutdown_asyncgens()``
before closing a loop. :func:`close_at_loop_exit` registers a sentinel async generator with the running loop (one
per loop, started synchronously so the loop's first-iteration hook records it); its ``finally`` runs on that loop
during the shutdown and closes every registered resource still alive. Resources are held weakly: registering does
not keep a dropped client's providers alive. A loop closed without ``shutdown_asyncgens`` runs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Protocol

__all__ = ["Closable", "close_at_loop_exit"]


class Closable(Protocol):
    async def aclose(self) -> None: ...


_lock = threading.Lock()
_open: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[AsyncGenerator[None, None], weakref.WeakSet[Closable]]
] = weakref.WeakKeyDictionary()


async def _sentinel(resources: weakref.WeakSet[Closable]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _lock:
            _open.pop(asyncio.get_running_loop(), None)
        for resource in list(resources):
            with contextlib.suppress(Exception):
                await resource.aclose()


def close_at_loop_exit(resource: Closable) -> None:
    """Close ``resource`` on the running loop when that loop shuts down (no-op outside a running loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    with _lock:
        entry = _open.get(loop)
        if entry is None:
            resources: weakref.WeakSet[Closable] = weakref.WeakSet()
            gen = _sentinel(resources)
            with contextlib.suppress(StopIteration):
                gen.asend(None).send(None)  # first iteration: the loop's asyncgen hook now tracks ``gen``
            entry = _open[loop] = (gen, resources)
        entry[1].add(resource)
