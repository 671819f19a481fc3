"""Cache settings from the environment and the ``cache stats|clear|path`` functions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from _cache_helpers import entry

from steadytext_async import InvalidRequestError, Settings
from steadytext_async._cache import ResultCache, cache_path, open_result_cache, sqlite_backend
from steadytext_async._cache.cli import cache_clear, cache_command, cache_path_info, cache_stats


def test_cache_settings_from_env(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "STEADYTEXT_CACHE_DIR": str(tmp_path),
            "STEADYTEXT_DISABLE_CACHE": "1",
            "STEADYTEXT_CACHE_MAX_ENTRIES": "10",
            "STEADYTEXT_CACHE_MAX_BYTES": "4096",
        }
    )
    assert (s.cache_dir, s.cache_disabled, s.cache_max_entries, s.cache_max_bytes) == (tmp_path, True, 10, 4096)
    assert open_result_cache(s) is None
    d = Settings.from_env({})
    assert not d.cache_disabled and d.cache_dir.name == "cache" and "steadytext-async" in str(d.cache_dir)
    assert isinstance(open_result_cache(Settings.from_env({"STEADYTEXT_CACHE_DIR": str(tmp_path)})), ResultCache)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"STEADYTEXT_CACHE_MAX_ENTRIES": "0"}, "must be >= 1"),
        ({"STEADYTEXT_CACHE_MAX_BYTES": "lots"}, "not an integer"),
        ({"STEADYTEXT_DISABLE_CACHE": "perhaps"}, "not a boolean"),
    ],
)
def test_bad_cache_env_is_a_clear_error(env: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        Settings.from_env(env)


def test_path_stats_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Settings.from_env({"STEADYTEXT_CACHE_DIR": str(tmp_path / "c")})
    info = cache_path_info(s)
    assert info == {"path": str(tmp_path / "c" / "results.sqlite3"), "exists": False, "disabled": False}
    assert cache_stats(s)["entries"] == 0
    assert not cache_path(s).exists()  # reporting does not create the file

    async def fill() -> None:
        b = sqlite_backend(s)
        for i in range(3):
            await b.put(f"k{i}", entry(f"text {i}"))
        await b.account({"k0": 3}, 1)
        await b.aclose()

    asyncio.run(fill())
    stats = cache_stats(s)
    assert (stats["entries"], stats["hits"], stats["misses"], stats["hit_ratio"]) == (3, 3, 1, 0.75)
    assert stats["bytes"] > 0 and stats["max_entries"] == s.cache_max_entries
    assert cache_command("path", s) == 0
    assert json.loads(capsys.readouterr().out)["exists"] is True
    cleared = cache_clear(s)
    assert cleared["removed_entries"] == 3 and cleared["removed_bytes"] == stats["bytes"]
    assert cache_command("stats", s) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["entries"], out["hits"], out["hit_ratio"]) == (0, 0, None)
    with pytest.raises(ValueError, match="unknown cache action"):
        cache_command("purge", s)
