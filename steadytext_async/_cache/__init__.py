"""The result cache: key derivation, the backend seam, the sqlite and Redis backends, the single-flight front."""

from __future__ import annotations

from pathlib import Path

from .._config import Settings
from .base import NO_CLAIM, CacheBackend, CachedEntry, CacheStats, Claim, StreamItem
from .frontend import Produce, ResultCache
from .key import CACHE_FORMAT_VERSION, cache_key
from .sqlite import CACHE_FILENAME, SqliteBackend

__all__ = [
    "CACHE_FILENAME",
    "CACHE_FORMAT_VERSION",
    "NO_CLAIM",
    "CacheBackend",
    "CacheStats",
    "CachedEntry",
    "Claim",
    "Produce",
    "ResultCache",
    "SqliteBackend",
    "StreamItem",
    "cache_key",
    "cache_path",
    "open_result_cache",
    "result_backend",
    "sqlite_backend",
]


def cache_path(settings: Settings) -> Path:
    """The cache file used with ``settings``."""
    return settings.cache_dir / CACHE_FILENAME


def sqlite_backend(settings: Settings) -> SqliteBackend:
    """The sqlite backend configured by ``settings`` (opens lazily)."""
    return SqliteBackend(
        cache_path(settings),
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
    )


def result_backend(settings: Settings) -> CacheBackend:
    """Redis (over the sqlite tier it degrades to) when ``STEADYTEXT_CACHE_URL`` is set, else sqlite. Opens lazily."""
    local = sqlite_backend(settings)
    if settings.cache_url is None:
        return local
    from .redis import RedisBackend  # redis-py is imported only when configured

    return RedisBackend(
        settings.cache_url,
        local=local,
        prefix=settings.cache_prefix,
        ttl=settings.cache_ttl,
        secret=settings.cache_secret,
    )


def open_result_cache(settings: Settings) -> ResultCache | None:
    """The result cache configured by ``settings``, or None when ``STEADYTEXT_DISABLE_CACHE=1``. Opens lazily."""
    if settings.cache_disabled:
        return None
    return ResultCache(result_backend(settings))
