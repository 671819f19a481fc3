"""How serve drives the SDK: only through the client's declared doors (``AsyncSteadyText.run_request``,
``stream_request``, ``resolve_local``, ``stream_local``, ``check_local``, ``pool_stats``, ``result_cache``).

They run engine-side objects (router, local provider, pool) on the engine's loop through its portal, exactly as the
client runs them, so the server shares the client's worker pool, result cache and the host's thread budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._cache import ResultCache
from .._client import AsyncSteadyText

__all__ = ["cache_tiers", "pool_stats"]

CACHE_TIER_KEYS = ("hits_process", "hits_redis", "hits_local", "waits_process", "waits_cluster")


def pool_stats(client: AsyncSteadyText) -> dict[str, Any]:
    """Counters of the local worker pool (zeros before the first local request) and of the result cache."""
    cache = client.result_cache
    return {
        "workers_max": client.settings.workers,
        "threads": client.settings.threads,
        **dataclasses.asdict(client.pool_stats()),
        "cache_hits": cache.hits if cache is not None else 0,
        "cache_misses": cache.misses if cache is not None else 0,
        **cache_tiers(cache),
    }


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
