"""The process's engine: the one crossing for local generation.

One :class:`Engine` per process (``engine()``), rebuilt in a forked child. It owns what must not be duplicated or
touched from the caller's loop:

- the private loop thread (:class:`~steadytext_async._engine.portal.Portal`) that the worker pools and result
  caches live on;
- the host-wide decode-thread budget (:class:`~steadytext_async._worker.parent.budget.HostBudget`) that every pool of
  every process draws from;
- the result caches, one per cache configuration, shared by every client of the process;
- the list of live pools, so that interpreter exit stops every worker.

Clients (:class:`~steadytext_async.AsyncSteadyText`) live on the caller's loop and hold nothing of this strongly,
so a client dropped without ``aclose()`` can be collected (its pool is stopped then).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._process import current, on_fork
from .._worker.parent.budget import HostBudget
from .portal import Portal

if TYPE_CHECKING:
    from .._cache.frontend import ResultCache
    from .._config import Settings
    from .._loopexit import Closable
    from .._worker.parent.pool import Pool

__all__ = ["Engine", "engine"]

logger = logging.getLogger("steadytext_async")


def _cache_identity(settings: Settings) -> tuple[Any, ...]:
    return tuple((f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings) if "cache" in f.name)


def _default_budget_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steadytext-async")) / "budget"


class Engine:
    def __init__(self) -> None:
        self.portal = Portal()
        self.lifetime = current()
        self._lock = threading.Lock()
        self._budgets: dict[tuple[Path, int], HostBudget] = {}
        self._caches: dict[tuple[Any, ...], tuple[ResultCache, int]] = {}
        self._pools: set[Pool] = set()  # live pools (strong: interpreter exit must stop their workers)
        self._atexit = False

    # -- the host budget -------------------------------------------------------------------------------------
    def budget(self, settings: Settings) -> HostBudget | None:
        """The host-wide thread budget for ``settings`` (one object per directory and size), or None if disabled."""
        if not settings.host_budget:
            return None
        key = (settings.budget_dir or _default_budget_dir(), settings.host_threads)
        with self._lock:
            budget = self._budgets.get(key)
            if budget is None:
                budget = self._budgets[key] = HostBudget(key[0] / f"cores-{key[1]}", key[1])
            return budget

    # -- pools -----------------------------------------------------------------------------------------------
    def new_pool(self, settings: Settings) -> Pool:
        from .._worker.parent.pool import Pool

        s = settings
        pool = Pool(
            max_workers=s.workers,
            threads=s.threads,
            n_ctx=s.n_ctx,
            n_batch=s.n_batch,
            max_batch=s.max_batch,
            spread_first=s.dispatch == "spread",
            prefix_cache_bytes=s.prefix_cache_mb * 1024 * 1024,
            verdict_path=str(s.cache_dir / "batch-verdicts.json"),
            llama_log=s.llama_log,
            start_timeout=s.start_timeout,
            budget=self.budget(s),
            spares=s.spare_workers,
        )
        with self._lock:
            self._pools.add(pool)
        self._at_exit()
        return pool

    def retire_pool(self, pool: Pool) -> None:
        """Forget a pool that was closed (or whose owner was collected: then close it)."""
        with self._lock:
            self._pools.discard(pool)
        if not pool.closed:
            self.close_later(pool)

    def close_later(self, resource: Closable) -> None:
        """Close ``resource`` on the engine loop without waiting: its owner was
        collected, possibly in another thread or during a garbage collection."""
        if not (self.portal.started and self.lifetime.here):
            return
        coro = resource.aclose()
        try:
            self.portal.submit(coro)
        except RuntimeError:  # the loop has stopped (interpreter exit)
            coro.close()

    def pools(self) -> list[Pool]:
        with self._lock:
            return list(self._pools)

    # -- caches ----------------------------------------------------------------------------------------------
    def cache(self, settings: Settings) -> ResultCache | None:
        """The result cache for ``settings`` (shared by every client with the same cache settings)."""
        if settings.cache_disabled:
            return None
        key = _cache_identity(settings)
        with self._lock:
            held = self._caches.get(key)
            if held is None:
                from .._cache import open_result_cache

                cache = open_result_cache(settings)
                if cache is None:
                    return None
                held = (cache, 0)
            self._caches[key] = (held[0], held[1] + 1)
        self._at_exit()
        return held[0]

    async def release_cache(self, settings: Settings) -> None:
        """One client is done with its cache: close it when it was the last, else finish its pending writes."""
        key = _cache_identity(settings)
        with self._lock:
            held = self._caches.get(key)
            if held is None:
                return
            cache, refs = held
            if refs <= 1:
                del self._caches[key]
            else:
                self._caches[key] = (cache, refs - 1)
        if refs <= 1:
            await cache.aclose()
        else:
            await cache.drain()

    async def drain_cache(self, settings: Settings) -> None:
        """Finish the pending writes of the result cache for ``settings`` (if it is open)."""
        with self._lock:
            held = self._caches.get(_cache_identity(settings))
        if held is not None:
            await held[0].drain()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _at_exit(self) -> None:
        if not self._atexit:
            self._atexit = True
            atexit.register(self.shutdown)

    async def _aclose_all(self) -> None:
        pools = self.pools()
        with self._lock:
            caches = [cache for cache, _ in self._caches.values()]
            self._caches.clear()
        await asyncio.gather(*(c.aclose() for c in caches), *(p.aclose() for p in pools), return_exceptions=True)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every worker and flush every cache (registered with atexit; idempotent)."""
        if not self.lifetime.here or not self.portal.started:
            return
        if not self.portal.in_portal():
            fut = self.portal.submit(self._aclose_all())
            with contextlib.suppress(Exception):
                fut.result(timeout)
        for pool in self.pools():  # last resort for workers that did not stop in time
            pool.kill_all_now()
        self.portal.stop()

    def forget_after_fork(self) -> None:
        """In a forked child: nothing of the parent's engine is usable (its thread and pipes are the parent's)."""
        for pool in list(self._pools):
            pool.forget_after_fork()
        self._pools.clear()
        self._caches.clear()


_engine: Engine | None = None
_engine_lock = threading.Lock()
_graveyard: list[Engine] = []  # parents' engines in a forked child: kept so no finalizer touches their resources


def engine() -> Engine:
    """This process's engine (created on first use; a forked child gets its own)."""
    global _engine
    current = _engine
    if current is not None:
        return current
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def _after_fork_in_child() -> None:
    global _engine, _engine_lock
    _engine_lock = threading.Lock()
    if _engine is not None:
        _engine.forget_after_fork()
        _graveyard.append(_engine)
        _engine = None


on_fork(child=_after_fork_in_child)
