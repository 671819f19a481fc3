"""A flight: one in-progress lookup or generation for a cache key, broadcast to every subscriber.

The flight's task (owned by :class:`~steadytext_async._cache.frontend.ResultCache`) pushes items as they arrive;
each subscriber keeps its own position in ``items`` and waits on ``event``, which is replaced at every push so
that one ``set()`` wakes everyone who waited for the next item.
"""

from __future__ import annotations

import asyncio

from .base import StreamItem

__all__ = ["Flight"]


class Flight:
    """One in-progress lookup/generation for a key: the items so far, broadcast to subscribers."""

    __slots__ = ("done", "error", "event", "items", "subscribers", "task")

    def __init__(self) -> None:
        self.items: list[StreamItem] = []
        self.done = False
        self.error: BaseException | None = None
        self.subscribers = 0
        self.event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def push(self, *items: StreamItem) -> None:
        self.items.extend(items)
        self._wake()

    def finish(self, error: BaseException | None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self._wake()

    def _wake(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()
