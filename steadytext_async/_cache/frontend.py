"""ResultCache: an in-process LRU of hot entries over a shared backend, with single-flight generation.

``stream(key, produce)`` answers from the front LRU without I/O; on a front miss one task per key (the *flight*,
owned by the cache) looks in the backend and otherwise runs ``produce()`` once, broadcasting every item to all
concurrent subscribers. A subscriber that leaves (cancelled or closed) never disturbs the others; production is
cancelled only when no subscriber is left. A fully produced, successful, non-fallback stream enters the front LRU
at once and is written to the backend in the background (the caller never waits for the write).

Across processes, a flight that misses asks the backend to :meth:`~.base.CacheBackend.claim` the key: it either
returns another process's result (which that process produced while this one waited) or the right to produce,
possibly with a lease that is released only after the write, so the waiting processes find the entry stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._config import redact_url
from .._models import Chunk, GenerationResult
from .._process import on_fork
from .base import NO_CLAIM, CacheBackend, CachedEntry, CacheStats, Claim, StreamItem
from .flight import Flight

__all__ = ["Produce", "ResultCache"]

logger = logging.getLogger("steadytext_async")

Produce = Callable[[], AsyncIterator[StreamItem]]
T = TypeVar("T")
PEEK_BATCH = 0.05  # seconds: hits peeked from other threads are accounted on the cache loop at most this often


@dataclasses.dataclass(slots=True)
class _Hot:
    items: tuple[StreamItem, ...]
    size: int


def _approx_size(items: tuple[StreamItem, ...]) -> int:
    size = 256
    for item in items:
        size += 64 + 2 * len(item.text) + 8 * len(item.token_ids)
        tokens = item.tokens if isinstance(item, Chunk) else item.logprobs
        if tokens:
            size += sum(96 + 64 * len(t.top_logprobs) for t in tokens)
        if isinstance(item, GenerationResult):  # the fingerprint holds the whole input (and the constraint)
            fp = item.fingerprint
            held = len(fp.prompt or "") + len(fp.constraint or "") + sum(len(m.text) for m in fp.messages or ())
            size += 1024 + 2 * held
    return size


def storable(items: list[StreamItem]) -> GenerationResult | None:
    """The final result if ``items`` is a complete, consistent, non-fallback stream worth caching."""
    if not items:
        return None
    result = items[-1]
    if not isinstance(result, GenerationResult) or result.fallback or result.cached:
        return None
    base_url = result.fingerprint.base_url
    if base_url and redact_url(base_url) != base_url:  # credentials in the URL must never reach a shared store
        return None
    chunks = items[:-1]
    if not all(isinstance(c, Chunk) for c in chunks) or "".join(c.text for c in chunks) != result.text:
        return None
    return result


class ResultCache:
    """Front LRU + backend + single-flight. Lives on one event loop (the runtime loop); reusable after aclose."""

    def __init__(
        self,
        backend: CacheBackend | None,
        *,
        front_entries: int = 512,
        front_bytes: int = 64 * 1024 * 1024,
        flush_delay: float = 1.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.backend = backend
        self.front_entries = front_entries
        self.front_bytes = front_bytes
        self.flush_delay = flush_delay
        self.close_timeout = close_timeout
        self._hits = 0
        self.misses = 0
        # hits by where they were answered (for /metrics): the front LRU, another caller's in-process flight
        # (single-flight), or the backend (a shared tier such as Redis, or the local file)
        self.tier_hits = {"front": 0, "joined": 0, "backend": 0}
        self._peeked: deque[str] = deque()  # hits answered by peek() on other threads, not yet accounted
        self._peek_drain_armed = False
        self._front: OrderedDict[str, _Hot] = OrderedDict()
        self._front_size = 0
        self._flights: dict[tuple[str, str], Flight] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Task[Any]] = set()
        self._pending_hits: dict[str, int] = {}
        self._pending_misses = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._warned: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        _instances.add(self)

    # -- public ----------------------------------------------------------------------------------------------
    async def stream(self, key: str, produce: Produce, *, variant: str = "") -> AsyncIterator[StreamItem]:
        """Items for ``key``: replayed from the cache, or produced once for all concurrent callers.

        ``variant`` separates flights that must not share a live production (e.g. strict vs non-strict requests,
        which differ in how a failure is reported); it does not affect what is stored.
        """
        hot = self._front.get(key)
        if hot is not None:
            self._front.move_to_end(key)
            self._hit(key)
            for item in hot.items:
                yield item
            return
        self._loop = asyncio.get_running_loop()
        fkey = (key, variant)
        flight = self._flights.get(fkey)
        if flight is None:
            flight = self._flights[fkey] = Flight()
            flight.task = self._spawn(self._fly(fkey, flight, produce))
        else:
            self._hit(key, "joined")
        flight.subscribers += 1
        i = 0
        try:
            while True:
                if i < len(flight.items):
                    item = flight.items[i]
                    i += 1
                    yield item
                elif flight.done:
                    if flight.error is not None:
                        raise flight.error
                    return
                else:
                    await flight.event.wait()
        finally:
            flight.subscribers -= 1
            if flight.subscribers == 0 and not flight.done:
                if self._flights.get(fkey) is flight:
                    del self._flights[fkey]
                if flight.task is not None:
                    flight.task.cancel()

    def peek(self, key: str) -> tuple[StreamItem, ...] | None:
        """The replay of ``key`` if the front layer holds it, else None. Callable from any thread: no I/O, no
        await, so a caller outside the cache's loop can answer a hot hit without a cross-thread hop."""
        hot = self._front.get(key)
        if hot is None:
            return None
        self._peeked.append(key)  # accounted on the cache's loop, in batches: one wake-up per PEEK_BATCH seconds
        loop = self._loop
        if not self._peek_drain_armed and loop is not None and not loop.is_closed():
            self._peek_drain_armed = True
            try:
                loop.call_soon_threadsafe(loop.call_later, PEEK_BATCH, self._account_peeked)
            except RuntimeError:
                self._peek_drain_armed = False
        return hot.items

    @property
    def hits(self) -> int:
        """Hits in this process, including those peeked from other threads and not yet accounted."""
        return self._hits + len(self._peeked)

    def _account_peeked(self) -> None:
        self._peek_drain_armed = False  # before draining: a peek racing with this drain re-arms it
        while self._peeked:
            self._hit(self._peeked.popleft())

    async def stats(self) -> CacheStats:
        """Persistent counters (after this process's pending writes and hits), or this process's if no backend."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self.close_timeout)
        await self._flush()
        if self.backend is None:
            return CacheStats(entries=len(self._front), hits=self.hits, misses=self.misses, available=False)
        return await self._guard("stats", self.backend.stats(), CacheStats(available=False))

    async def clear(self) -> None:
        """Drop every entry, here and in the backend."""
        self._front.clear()
        self._front_size = 0
        self._pending_hits.clear()
        self._peeked.clear()
        self._pending_misses = 0
        if self.backend is not None:
            await self._guard("clear", self.backend.clear(), None)

    async def drain(self) -> None:
        """Finish pending writes (up to ``close_timeout``) and flush counters; the cache stays open."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.close_timeout)
        await self._flush()

    async def aclose(self) -> None:
        """Cancel flights, finish pending writes (up to ``close_timeout``), flush counters, close the backend."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        flights = list(self._flights.values())
        self._flights.clear()
        for flight in flights:
            if flight.task is not None:
                flight.task.cancel()
        if self._tasks:  # pending writes finish; a write that hangs is abandoned after close_timeout
            _, hung = await asyncio.wait(list(self._tasks), timeout=self.close_timeout)
            for task in hung:
                task.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._flush()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.backend is not None:
            await self._guard("close", self.backend.aclose(), None)

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's flights, tasks and connection (their loop and threads are gone)."""
        self._flights.clear()
        self._tasks.clear()
        self._writes.clear()
        self._pending_hits.clear()
        self._peeked.clear()
        self._peek_drain_armed = False
        self._pending_misses = 0
        self._flush_handle = None
        self._loop = None
        after_fork = getattr(self.backend, "_after_fork", None)
        if after_fork is not None:
            after_fork()

    # -- internals -------------------------------------------------------------------------------------------
    async def _fly(self, fkey: tuple[str, str], flight: Flight, produce: Produce) -> None:
        key = fkey[0]
        release: Callable[[], Awaitable[None]] | None = None
        try:
            entry = await self._lookup(key)
            if entry is None:  # another process may be producing it: wait for its result, or lead
                claim = await self._claim(key)
                entry, release = claim.entry, claim.release
            if entry is not None:
                items = entry.replay()
                self._remember(key, items)
                self._hit(key, "backend")
                flight.push(*items)
                flight.finish(None)
                return
            self.misses += 1
            self._pending_misses += 1
            await self._produce(flight, produce)
            result = storable(flight.items)
            if result is None:
                flight.finish(None)
                self._schedule_flush()
                return
            chunks = tuple(c for c in flight.items if isinstance(c, Chunk))
            entry = CachedEntry(
                chunks=chunks, result=result, model_sha256=result.fingerprint.model_sha256, created=time.time()
            )
            self._remember(key, entry.replay())
            flight.finish(None)  # wake the subscribers first; the write happens behind them
            write = self._spawn(self._store(key, entry, release))  # the lease is released after the write
            release = None
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
        except asyncio.CancelledError:
            flight.finish(asyncio.CancelledError())
            raise
        except Exception as exc:
            flight.finish(exc)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: tell the subscribers, then propagate
            flight.finish(exc)
            raise
        finally:
            if self._flights.get(fkey) is flight:
                del self._flights[fkey]
            if release is not None:  # production failed or was cancelled: let another process lead at once
                self._spawn(self._release(release))

    @staticmethod
    async def _produce(flight: Flight, produce: Produce) -> None:
        agen = produce()
        try:
            async for item in agen:
                flight.push(item)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _lookup(self, key: str) -> CachedEntry | None:
        if self.backend is None:
            return None
        return await self._guard("get", self.backend.get(key), None)

    async def _claim(self, key: str) -> Claim:
        if self.backend is None:
            return NO_CLAIM
        return await self._guard("claim", self.backend.claim(key), NO_CLAIM)

    async def _store(self, key: str, entry: CachedEntry, release: Callable[[], Awaitable[None]] | None) -> None:
        try:
            await asyncio.sleep(0)  # let the woken subscribers deliver the result before encoding
            if self.backend is not None:
                await self._guard("put", self.backend.put(key, entry), None)
        finally:
            if release is not None:  # other processes waiting on this key find the entry stored
                await self._release(release)
        await self._flush()

    async def _release(self, release: Callable[[], Awaitable[None]]) -> None:
        await self._guard("release", release(), None)

    def _remember(self, key: str, items: tuple[StreamItem, ...]) -> None:
        size = _approx_size(items)
        if size > self.front_bytes or self.front_entries < 1:
            return
        old = self._front.pop(key, None)
        if old is not None:
            self._front_size -= old.size
        self._front[key] = _Hot(items, size)
        self._front_size += size
        while len(self._front) > self.front_entries or self._front_size > self.front_bytes:
            _, cold = self._front.popitem(last=False)
            self._front_size -= cold.size

    def _hit(self, key: str, tier: str = "front") -> None:
        self._hits += 1
        self.tier_hits[tier] += 1
        self._pending_hits[key] = self._pending_hits.get(key, 0) + 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.backend is None or self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(self.flush_delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        self._spawn(self._flush())

    async def _flush(self) -> None:
        self._account_peeked()
        hits, self._pending_hits = self._pending_hits, {}
        misses, self._pending_misses = self._pending_misses, 0
        if self.backend is not None and (hits or misses):
            await self._guard("account", self.backend.account(hits, misses), None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, what: str, coro: Awaitable[T], default: T) -> T:
        """Await a backend call; a backend that raises anyway is logged (once per operation) and ignored."""
        try:
            return await coro
        except Exception as exc:
            if what not in self._warned:
                self._warned.add(what)
                logger.warning("result cache %s failed, ignored: %r", what, exc)
            return default


_instances: weakref.WeakSet[ResultCache] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for cache in list(_instances):
        cache._after_fork()


on_fork(child=_reset_after_fork)
