"""The engine's private event-loop thread and the bridges that reach it (anyio's BlockingPortal idea).

- ``await portal.call(coro)`` from any other loop: one hop there and one back; cancellation propagates.
- ``portal.run(coro)`` from any plain thread (the sync shims).
- ``portal.iterate(agen)`` / ``portal.iterate_sync(agen)``: the async generator runs as one task on the portal
  loop and hands its items over in **batches**: the consumer is woken once per batch of ready items, not once per
  item, and drains everything that arrived meanwhile. Leaving early cancels the task and waits for it to unwind,
  so a worker is free again when the consumer's ``aclose`` returns.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Portal", "iterate_on"]

T = TypeVar("T")


class Portal:
    def __init__(self, name: str = "steadytext-engine") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def main() -> None:
                    asyncio.set_event_loop(new_loop)
                    new_loop.call_soon(ready.set)
                    try:
                        new_loop.run_forever()
                    finally:
                        new_loop.close()  # stopped (stop()): nothing runs on it any more

                self._thread = threading.Thread(target=main, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = new_loop
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def in_portal(self) -> bool:
        """True when called on the portal's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and threading.current_thread() is not thread:
                thread.join(timeout)
        with self._lock:
            self._loop = None
            self._thread = None

    # -- bridges ---------------------------------------------------------------------------------------------
    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.in_portal():
            return await coro
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(fut)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.in_portal():
            coro.close()
            raise RuntimeError("blocking steadytext call made from inside the steadytext engine loop")
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # KeyboardInterrupt and friends: stop the engine-side work too
            raise

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start ``coro`` on the portal loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def iterate(self, agen: AsyncIterator[T]) -> AsyncIterator[T]:
        return iterate_on(self.loop, agen)

    def iterate_sync(self, agen: AsyncIterator[T]) -> Iterator[T]:
        if self.in_portal():
            raise RuntimeError("blocking steadytext iteration from inside the steadytext engine loop")
        relay: _Relay[T] = _Relay(lambda wake: wake())
        relay.start(self.loop, agen)
        try:
            while True:
                event = threading.Event()
                taken = relay.take(event.set)
                if taken is None:
                    event.wait()
                    continue
                batch, ended = taken
                yield from batch
                if ended:
                    return
        finally:
            with contextlib.suppress(RuntimeError):
                relay.close(self.loop).result()


async def iterate_on(loop: asyncio.AbstractEventLoop, agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """The items of ``agen``, run as one task on ``loop``, consumed on the running loop in batches (see the module
    docstring); on ``loop`` itself, plainly. The engine uses it both ways: callers reach the engine's loop with it,
    and the engine reaches back into a caller's loop (a remote provider's stream whose result the cache keeps)."""
    here = asyncio.get_running_loop()
    if loop is here:
        async with contextlib.aclosing(agen):  # type: ignore[type-var]
            async for item in agen:
                yield item
        return
    relay: _Relay[T] = _Relay(lambda wake: here.call_soon_threadsafe(wake))
    relay.start(loop, agen)
    try:
        while True:
            waiter: asyncio.Future[None] = here.create_future()
            taken = relay.take(functools.partial(_resolve, waiter))
            if taken is None:
                await waiter
                continue
            batch, ended = taken
            for item in batch:
                yield item
            if ended:
                return
    finally:
        await asyncio.shield(asyncio.wrap_future(relay.close(loop)))


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _End:
    """Marks the end of a relay's items (``error`` None: exhausted normally)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Relay(Generic[T]):
    """Runs an async generator as one task on the portal loop; a consumer elsewhere takes items in batches."""

    def __init__(self, schedule: Callable[[Callable[[], Any]], Any]) -> None:
        self._schedule = schedule  # how to run a wake-up callback in the consumer's context
        self._lock = threading.Lock()
        self._items: collections.deque[T | _End] = collections.deque()
        self._wake: Callable[[], Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = False  # the end marker was queued
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start(self, loop: asyncio.AbstractEventLoop, agen: AsyncIterator[T]) -> None:
        def begin() -> None:
            self._task = loop.create_task(self._pump(agen))
            self._task.add_done_callback(self._finished)  # also when cancelled before its first step

        loop.call_soon_threadsafe(begin)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._put(_End(None))  # no-op for the consumer if _pump already ended the stream
        if not self._done.done():
            self._done.set_result(None)

    async def _pump(self, agen: AsyncIterator[T]) -> None:
        try:
            async with contextlib.aclosing(agen):  # type: ignore[type-var]
                async for item in agen:
                    self._put(item)
        except asyncio.CancelledError:
            pass  # the consumer left; nobody reads the end marker
        except BaseException as exc:  # delivered to the consumer, which re-raises it
            self._put(_End(exc))

    def _put(self, item: T | _End) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = isinstance(item, _End)
            self._items.append(item)
            wake, self._wake = self._wake, None
        if wake is not None:
            self._schedule(wake)

    def take(self, wake: Callable[[], Any]) -> tuple[list[T], bool] | None:
        """``(items ready now, ended)``, or None after arming ``wake``; re-raises the producer's error at the end."""
        with self._lock:
            if not self._items:
                self._wake = wake
                return None
            batch = list(self._items)
            self._items.clear()
        last = batch[-1]
        if isinstance(last, _End):
            if last.error is not None:
                raise last.error
            return batch[:-1], True  # type: ignore[return-value]
        return batch, False  # type: ignore[return-value]

    def close(self, loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[None]:
        """Cancel the producer (if still running) and return a future that resolves once it has unwound."""

        def cancel() -> None:
            if self._task is not None and not self._task.done():
                self._task.cancel()

        if not self._done.done():
            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:  # loop already closed (interpreter exit)
                self._done.set_result(None)
        return self._done
