"""The runtime: one private event-loop thread that owns every loop-bound resource (worker pipes, locks).

Callers on any event loop (asyncio.run called many times, uvloop, Jupyter, FastAPI) or on plain threads reach it
through this portal, in the spirit of anyio's BlockingPortal:

- ``await runtime.call(coro)`` from any loop (cancellation propagates into the runtime task);
- ``runtime.run(coro)`` from any thread that is not the runtime thread (the sync shims);
- ``runtime.iterate(agen)`` / ``runtime.iterate_sync(agen)`` to consume a runtime-side async generator.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Runtime", "runtime"]

T = TypeVar("T")


async def _aclose(agen: AsyncIterator[Any]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()


class Runtime:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._sync_hooks: list[Callable[[], None]] = []
        self._atexit_registered = False

    # -- lifecycle -------------------------------------------------------------------------------------------
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
                    new_loop.run_forever()

                self._thread = threading.Thread(target=main, name="steadytext-runtime", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = new_loop
                if not self._atexit_registered:
                    atexit.register(self.shutdown)
                    self._atexit_registered = True
            return self._loop

    def on_shutdown(self, hook: Callable[[], Awaitable[None]], last_resort: Callable[[], None]) -> None:
        """Register an async cleanup (run at shutdown) and a synchronous last resort (if that times out).

        Held strongly on purpose: a client dropped without ``aclose()`` still gets its worker processes stopped and
        its pending cache writes flushed at interpreter exit.
        """
        self._shutdown_hooks.append(hook)
        self._sync_hooks.append(last_resort)

    def in_runtime(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def shutdown(self, timeout: float = 5.0) -> None:
        """Run cleanup hooks and stop the loop thread. Idempotent; registered with atexit."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not loop.is_running():
            return
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        sync_hooks, self._sync_hooks = self._sync_hooks, []

        async def run_hooks() -> None:
            await asyncio.gather(*(h() for h in hooks), return_exceptions=True)

        if threading.current_thread() is not thread:
            fut = asyncio.run_coroutine_threadsafe(run_hooks(), loop)
            with contextlib.suppress(Exception):
                fut.result(timeout)
        for hook in sync_hooks:
            with contextlib.suppress(Exception):
                hook()
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(timeout)
        with self._lock:
            self._loop = None
            self._thread = None

    def _after_fork(self) -> None:
        # The child of a fork has no runtime thread; start afresh (the parent's workers are not ours).
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._shutdown_hooks = []
        self._sync_hooks = []

    # -- bridges ---------------------------------------------------------------------------------------------
    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.in_runtime():
            return await coro
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(fut)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.in_runtime() or threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking steadytext call made from inside the steadytext runtime loop")
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # KeyboardInterrupt and friends: stop the runtime-side work too
            raise

    async def iterate(self, agen: AsyncIterator[T]) -> AsyncIterator[T]:
        if self.in_runtime():
            try:
                async for item in agen:
                    yield item
            finally:
                await _aclose(agen)
            return
        bridge = _Bridge(agen)
        try:
            while True:
                try:
                    item = await self.call(bridge.step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await asyncio.shield(self.call(bridge.close()))

    def iterate_sync(self, agen: AsyncIterator[T]) -> Iterator[T]:
        bridge = _Bridge(agen)
        try:
            while True:
                try:
                    item = self.run(bridge.step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            with contextlib.suppress(RuntimeError):
                self.run(bridge.close())


class _Bridge(Generic[T]):
    """Steps a runtime-side async generator from another thread or loop, and closes it safely."""

    def __init__(self, agen: AsyncIterator[T]) -> None:
        self.agen = agen
        self.task: asyncio.Task[Any] | None = None  # the runtime-side task of the current __anext__

    async def step(self) -> T:
        self.task = asyncio.current_task()
        return await self.agen.__anext__()

    async def close(self) -> None:
        # A cancelled __anext__ may still be unwinding on the runtime loop; let it finish before aclose().
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task])
        await _aclose(self.agen)


runtime = Runtime()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=runtime._after_fork)
