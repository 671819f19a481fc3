"""The backend seam: a small async interface any shared store (sqlite, Redis) implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

from .._models import Chunk, GenerationResult

__all__ = ["NO_CLAIM", "CacheBackend", "CacheStats", "CachedEntry", "Claim", "StreamItem"]

StreamItem = Chunk | GenerationResult


@dataclasses.dataclass(frozen=True, slots=True)
class CachedEntry:
    """One stored generation: the streamed chunks exactly as produced, the final result, and metadata."""

    chunks: tuple[Chunk, ...]
    result: GenerationResult
    model_sha256: str | None = None
    created: float = 0.0
    hits: int = 0

    def replay(self) -> tuple[StreamItem, ...]:
        """The stream a hit yields: the same chunks, then the result marked ``cached=True``."""
        return (*self.chunks, self.result.model_copy(update={"cached": True}))


@dataclasses.dataclass(frozen=True, slots=True)
class CacheStats:
    """Persistent counters (all processes) plus this process's backend error count."""

    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    path: str | None = None
    errors: int = 0
    available: bool = True

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`CacheBackend.claim` found: another process's result, or the right (maybe a lease) to produce.

    ``entry`` set: replay it and produce nothing. Otherwise produce; when ``release`` is set, the caller holds a
    cross-process lease on the key and calls ``release()`` once the result is stored (or production gave up).
    """

    entry: CachedEntry | None = None
    release: Callable[[], Awaitable[None]] | None = None


NO_CLAIM = Claim()


@runtime_checkable
class CacheBackend(Protocol):
    """Shared storage of :class:`CachedEntry` values. Implementations never raise for storage faults."""

    async def get(self, key: str) -> CachedEntry | None:
        """The entry for ``key``, or None (missing, unreadable, or storage unavailable)."""
        ...

    async def put(self, key: str, entry: CachedEntry) -> None:
        """Store ``entry`` unless ``key`` is present; evict by frecency to stay within capacity."""
        ...

    async def account(self, hits: Mapping[str, int], misses: int) -> None:
        """Record hits per key (frequency and recency for eviction) and misses (for the hit ratio)."""
        ...

    async def claim(self, key: str) -> Claim:
        """Single-flight across processes, called after a miss: wait while another process produces ``key`` and
        return its entry, or return the right to produce (see :class:`Claim`). A backend without cross-process
        coordination returns :data:`NO_CLAIM` at once. Cancelling the call leaves no lease behind."""
        ...

    async def stats(self) -> CacheStats:
        """Entry count, stored bytes and hit/miss counters."""
        ...

    async def clear(self) -> None:
        """Remove every entry and reset the counters."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. A later call reopens."""
        ...
