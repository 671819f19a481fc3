"""The one place serve reaches into the SDK's internals: the local provider, the router and the pool counters.

Engine-side objects (router, local provider, pool) run on the engine's loop through its portal, exactly as the
client runs them, so the server shares the client's worker pool, result cache and the host's thread budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._cache import ResultCache
from .._client import AsyncSteadyText
from .._engine import engine
from .._models import Chunk, GenerationRequest, GenerationResult, ModelSpec
from ..providers.base import ProviderChunk, ProviderDone

__all__ = ["cache_tiers", "generate_request", "local_events", "pool_stats", "resolve_local", "stream_request"]

CACHE_TIER_KEYS = ("hits_process", "hits_redis", "hits_local", "waits_process", "waits_cluster")


async def generate_request(client: AsyncSteadyText, request: GenerationRequest) -> GenerationResult:
    """``client.generate`` for a request already validated (serve validates off its loop)."""
    return await client._agenerate(request)


def stream_request(client: AsyncSteadyText, request: GenerationRequest) -> AsyncIterator[Chunk | GenerationResult]:
    """``client.stream`` for a request already validated."""
    return client._astream(request)


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
        **cache_tiers(cache),
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


def cache_tiers(cache: ResultCache | None) -> dict[str, int]:
    """Cache hits by the tier that answered them and single-flight waits by scope (zeros without a cache).

    ``hits_process``: the in-process front layer, or another request's generation in this process (single-flight);
    ``hits_redis``: the shared Redis cache; ``hits_local``: this host's sqlite file (also while Redis is away).
    ``waits_process``: requests that joined a generation running in this process; ``waits_cluster``: lookups that
    waited for a generation leased by another process (any replica) through Redis.
    """
    if cache is None:
        return dict.fromkeys(CACHE_TIER_KEYS, 0)
    tiers = cache.tier_hits
    backend = cache.backend
    redis_hits = int(getattr(backend, "shared_hits", 0))
    return {
        "hits_process": cache.hits - tiers["backend"],
        "hits_redis": redis_hits,
        "hits_local": max(0, tiers["backend"] - redis_hits),
        "waits_process": tiers["joined"],
        "waits_cluster": int(getattr(backend, "claim_waits", 0)),
    }
