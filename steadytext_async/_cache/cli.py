"""``steadytext-async cache stats|clear|path``: plain functions over :class:`Settings` (wired in ``cli.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .._config import Settings
from . import cache_path, result_backend
from .base import CacheStats

__all__ = ["cache_clear", "cache_command", "cache_path_info", "cache_stats"]


def cache_path_info(settings: Settings) -> dict[str, Any]:
    """Where the cache file is, whether it exists, whether caching is disabled, and the shared Redis (redacted)."""
    path = cache_path(settings)
    info: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "disabled": settings.cache_disabled}
    if settings.cache_url is not None:
        info.update(url=settings.cache_location, prefix=settings.cache_prefix, ttl=settings.cache_ttl)
    return info


def _read_stats(settings: Settings, *, clear: bool) -> tuple[CacheStats, CacheStats]:
    path = cache_path(settings)
    if settings.cache_url is None and not path.is_file():  # do not create a file just to report on it
        empty = CacheStats(path=str(path))
        return empty, empty

    async def run() -> tuple[CacheStats, CacheStats]:
        backend = result_backend(settings)
        try:
            before = await backend.stats()
            if not clear:
                return before, before
            await backend.clear()
            return before, await backend.stats()
        finally:
            await backend.aclose()

    return asyncio.run(run())


def cache_stats(settings: Settings) -> dict[str, Any]:
    """Entries, stored bytes, hits, misses and hit ratio of the cache file, with the configured limits."""
    s, _ = _read_stats(settings, clear=False)
    return {
        "path": s.path,
        "entries": s.entries,
        "bytes": s.bytes,
        "hits": s.hits,
        "misses": s.misses,
        "hit_ratio": s.hit_ratio,
        "max_entries": settings.cache_max_entries,
        "max_bytes": settings.cache_max_bytes,
        "disabled": settings.cache_disabled,
        "available": s.available,
    }


def cache_clear(settings: Settings) -> dict[str, Any]:
    """Remove every entry and reset the counters; reports how many entries and bytes were removed."""
    before, after = _read_stats(settings, clear=True)
    return {
        "path": before.path,
        "removed_entries": before.entries - after.entries,
        "removed_bytes": before.bytes - after.bytes,
        "available": after.available,
    }


def cache_command(action: str, settings: Settings | None = None) -> int:
    """Print the result of ``action`` (stats, clear or path) as JSON; returns the exit status."""
    s = settings if settings is not None else Settings.from_env()
    commands = {"stats": cache_stats, "clear": cache_clear, "path": cache_path_info}
    if action not in commands:
        raise ValueError(f"unknown cache action {action!r} (use stats, clear or path)")
    data = commands[action](s)
    print(json.dumps(data, indent=2))
    return 0 if data.get("available", True) else 1
