"""The result cache: key derivation, the backend seam, the sqlite backend and the single-flight front."""

from __future__ import annotations

from pathlib import Path

from .._config import Settings
from .base import CacheBackend, CachedEntry, CacheStats, StreamItem
from .frontend import Produce, ResultCache
from .key import CACHE_FORMAT_VERSION, cache_key, cacheable
from .sqlite import CACHE_FILENAME, SqliteBackend

__all__ = [
    "CACHE_FILENAME",
    "CACHE_FORMAT_VERSION",
    "CacheBackend",
    "CacheStats",
    "CachedEntry",
    "Produce",
    "ResultCache",
    "SqliteBackend",
    "StreamItem",
    "cache_key",
    "cache_path",
    "cacheable",
    "open_result_cache",
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


def open_result_cache(settings: Settings) -> ResultCache | None:
    """The result cache configured by ``settings``, or None when ``STEADYTEXT_DISABLE_CACHE=1``. Opens lazily."""
    if settings.cache_disabled:
        return None
    return ResultCache(sqlite_backend(settings))
