"""The one place serve reaches into the SDK's internals: the local provider, the router and the pool counters.

Engine-side objects (router, local provider, pool) run on the engine's loop through its portal, exactly as the
client runs them, so the server shares the client's worker pool, result cache and the host's thread budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._client import AsyncSteadyText
from .._engine import engine
from .._models import GenerationRequest, ModelSpec
from ..providers.base import ProviderChunk, ProviderDone

__all__ = ["local_events", "pool_stats", "resolve_local"]


async def resolve_local(client: AsyncSteadyText, request: GenerationRequest) -> ModelSpec:
    """The server's own resolution of ``request``'s local model (assembled and verified)."""

    async def resolve() -> ModelSpec:
        return await client._router.resolve_local(request)  # the engine loop's router, as the client uses

    return await engine().portal.call(resolve())


def local_events(
    client: AsyncSteadyText, spec: ModelSpec, request: GenerationRequest
) -> AsyncIterator[ProviderChunk | ProviderDone]:
    """Raw provider events of one local generation on the server's worker pool (never forwarded to a daemon)."""
    return engine().portal.iterate(client._local.stream(spec, request))


def pool_stats(client: AsyncSteadyText) -> dict[str, Any]:
    """Counters of the local worker pool (zeros before the first local request)."""
    pool = client._local._pool
    cache = client._cache
    stats: dict[str, Any] = {
        "workers_max": client.settings.workers,
        "threads": client.settings.threads,
        "workers_alive": 0,
        "workers_busy": 0,
        "generations": 0,
        "respawns": 0,
        "cache_hits": cache.hits if cache is not None else 0,
        "cache_misses": cache.misses if cache is not None else 0,
        "prefix_hits": 0,
        "prefix_tokens": 0,
        "prefix_bytes": 0,
    }
    if pool is not None:
        alive = [w for w in pool._workers if w.alive]
        stats.update(
            workers_alive=len(alive),
            workers_busy=sum(1 for w in alive if w.busy),
            generations=pool.generations,
            respawns=pool.respawns,
            prefix_hits=pool.affinity.hits,
            prefix_tokens=pool.affinity.reused,
            prefix_bytes=pool.affinity.held(alive),
        )
    return stats
