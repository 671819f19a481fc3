"""The one place serve reaches into the SDK's internals: the local provider, the router and the pool counters.

Everything here runs the SDK's engine-side objects through the runtime bridge, exactly as the client does, so the
server shares the client's worker pool and thread budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._client import AsyncSteadyText
from .._models import GenerationRequest, ModelSpec
from .._runtime import runtime
from ..providers.base import ProviderChunk, ProviderDone

__all__ = ["local_events", "pool_stats", "resolve_local"]


async def resolve_local(client: AsyncSteadyText, request: GenerationRequest) -> ModelSpec:
    """The server's own resolution of ``request``'s local model (assembled and verified)."""
    return await runtime.call(client._router.resolve_local(request))


def local_events(
    client: AsyncSteadyText, spec: ModelSpec, request: GenerationRequest
) -> AsyncIterator[ProviderChunk | ProviderDone]:
    """Raw provider events of one local generation on the server's worker pool (never forwarded to a daemon)."""
    return runtime.iterate(client._local.stream(spec, request))


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
    }
    if pool is not None:
        alive = [w for w in pool._workers if w.alive]
        stats.update(
            workers_alive=len(alive),
            workers_busy=sum(1 for w in alive if w.busy),
            generations=pool.generations,
            respawns=pool.respawns,
        )
    return stats
