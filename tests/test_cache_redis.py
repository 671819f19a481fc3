"""The Redis backend against a real redis-server: shared hits, format checks, single-flight, outages, secrets."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _cache_helpers import entry, stream_items
from _redis_server import PASSWORD, RedisServer, redis_server_fixture  # noqa: F401 - the "server" fixture
from conftest import reap

from steadytext_async._cache import ResultCache, SqliteBackend, StreamItem
from steadytext_async._cache.codec import FORMAT, MAGIC, encode_entry, pack_entry
from steadytext_async._cache.redis import RedisBackend
from steadytext_async._models import GenerationResult

PREFIX = "st-test:"


class Producer:
    """A fake generation: counts calls, can be held at a gate, can be slow."""

    def __init__(self, text: str = "the quick brown fox", *, delay: float = 0.0) -> None:
        self.out = stream_items(text)
        self.calls = 0
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self) -> AsyncIterator[StreamItem]:
        self.calls += 1
        self.started.set()
        for i, item in enumerate(self.out):
            if i == 1:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            yield item


def backend(url: str, tmp_path: Path, name: str = "a", **kw: object) -> RedisBackend:
    local = SqliteBackend(tmp_path / f"local-{name}" / "results.sqlite3")
    return RedisBackend(url, local=local, prefix=PREFIX, **kw)  # type: ignore[arg-type]


def cache(url: str, tmp_path: Path, name: str = "a", **kw: object) -> ResultCache:
    """A ResultCache with its own front layer and local tier: stands for one process."""
    return ResultCache(backend(url, tmp_path, name, **kw))


async def collect(c: ResultCache, key: str, produce: Producer) -> list[StreamItem]:
    return [item async for item in c.stream(key, produce)]


def uncached(seq: list[StreamItem]) -> list[StreamItem]:
    return [i.model_copy(update={"cached": False}) if isinstance(i, GenerationResult) else i for i in seq]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The cache's warnings (not asyncio's debug-mode note that stopping the Redis server blocked the loop)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "steadytext_async"]


async def test_a_generation_by_one_process_is_a_byte_identical_hit_for_another(
    server: RedisServer, tmp_path: Path
) -> None:
    a, b = cache(server.url, tmp_path, "a"), cache(server.url, tmp_path, "b")
    pa, pb = Producer(), Producer()
    live = await collect(a, "k", pa)
    await a.aclose()  # the write-behind is done
    got = await collect(b, "k", pb)
    assert pa.calls == 1 and pb.calls == 0
    assert isinstance(got[-1], GenerationResult) and got[-1].cached
    assert uncached(got) == live == pa.out  # same chunk boundaries, same result
    raw = server.client().get(f"{PREFIX}r:k")
    assert isinstance(raw, bytes) and raw[:5] == MAGIC + bytes([FORMAT])
    stored = await b.backend.get("k")  # type: ignore[union-attr]
    assert stored is not None and raw[45:] == encode_entry(stored)  # header (with MAC field), then the sqlite bytes
    await b.aclose()
    assert not (tmp_path / "local-a").exists() and not (tmp_path / "local-b").exists()  # local tier unused


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        MAGIC + bytes([FORMAT + 1]) + b"\x00" * 8 + b"future format",
        pack_entry(entry("the quick brown fox"))[:-7],  # truncated
        "hash",
    ],
    ids=["garbage", "other-version", "truncated", "wrong-type"],
)
async def test_a_corrupt_or_foreign_value_is_a_miss_and_is_overwritten(
    server: RedisServer, tmp_path: Path, bad: bytes | str, caplog: pytest.LogCaptureFixture
) -> None:
    r = server.client()
    if bad == "hash":
        r.hset(f"{PREFIX}r:k", "x", "y")
    else:
        r.set(f"{PREFIX}r:k", bad)
    c = cache(server.url, tmp_path)
    produce = Producer()
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        assert await collect(c, "k", produce) == produce.out
        await c.aclose()
    assert produce.calls == 1
    assert any("unreadable shared result cache entry" in m for m in warnings_of(caplog))
    other = cache(server.url, tmp_path, "b")
    assert uncached(await collect(other, "k", Producer())) == produce.out  # the overwritten value is good
    await other.aclose()
    assert r.get(f"{PREFIX}r:k")[:4] == MAGIC  # type: ignore[index]


async def test_a_flushed_database_is_a_miss_then_refilled(server: RedisServer, tmp_path: Path) -> None:
    a = cache(server.url, tmp_path, "a")
    await collect(a, "k", Producer())
    await a.aclose()
    server.client().flushdb()
    b = cache(server.url, tmp_path, "b")
    pb = Producer()
    assert await collect(b, "k", pb) == pb.out and pb.calls == 1
    await b.aclose()
    assert server.client().exists(f"{PREFIX}r:k") == 1
    c = cache(server.url, tmp_path, "c")
    stats = await c.stats()
    await c.aclose()
    assert (stats.entries, stats.misses, stats.available) == (1, 1, True)


async def test_ttl_stats_and_clear_touch_only_our_prefix(server: RedisServer, tmp_path: Path) -> None:
    r = server.client()
    r.set("someone-else:x", "keep")
    c = cache(server.url, tmp_path, ttl=60.0)
    for key in ("k1", "k2", "k3"):
        await collect(c, key, Producer(key))
    await collect(c, "k1", Producer("k1"))  # a front hit, accounted to Redis
    stats = await c.stats()
    assert (stats.entries, stats.hits, stats.misses) == (3, 1, 3) and stats.bytes > 0
    assert 0 < r.pttl(f"{PREFIX}r:k1") <= 60_000
    assert PASSWORD not in str(stats.path) and "***" in str(stats.path)
    await c.clear()
    assert r.keys(f"{PREFIX}*") == [] and r.get("someone-else:x") == b"keep"
    await c.aclose()


async def test_a_waiter_elsewhere_gets_the_holders_result_and_its_cancel_spares_the_others(
    server: RedisServer, tmp_path: Path
) -> None:
    holder, other = cache(server.url, tmp_path, "a"), cache(server.url, tmp_path, "b")
    ph, po = Producer(), Producer()
    ph.gate.clear()
    lead = asyncio.create_task(collect(holder, "k", ph))
    await ph.started.wait()
    waiters = [asyncio.create_task(collect(other, "k", po)) for _ in range(3)]
    await asyncio.sleep(0.1)
    waiters[0].cancel()  # one waiter leaves; the flight and the others stay
    await asyncio.sleep(0.05)
    ph.gate.set()
    live = await lead
    got = await asyncio.gather(*waiters[1:])
    assert ph.calls == 1 and po.calls == 0
    assert all(uncached(g) == live for g in got)
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    await holder.aclose()
    await other.aclose()
    assert server.client().keys(f"{PREFIX}lock:*") == []  # the lease was released


async def test_a_slow_holder_keeps_its_lease_by_renewing_it(server: RedisServer, tmp_path: Path) -> None:
    holder, other = cache(server.url, tmp_path, "a", lock_ttl=0.6), cache(server.url, tmp_path, "b", lock_ttl=0.6)
    ph, po = Producer(delay=0.4), Producer()  # 5 items x 0.4 s = 2 s, over three lease lifetimes
    lead = asyncio.create_task(collect(holder, "k", ph))
    await ph.started.wait()
    got = await collect(other, "k", po)
    assert uncached(got) == await lead and ph.calls == 1 and po.calls == 0
    await holder.aclose()
    await other.aclose()


async def test_a_dead_holder_blocks_no_one_longer_than_its_lease(server: RedisServer, tmp_path: Path) -> None:
    server.client().set(f"{PREFIX}lock:k", "token-of-a-dead-process", px=600)
    c = cache(server.url, tmp_path)
    produce = Producer()
    t = time.monotonic()
    assert await collect(c, "k", produce) == produce.out
    waited = time.monotonic() - t
    assert produce.calls == 1 and 0.3 < waited < 5.0  # waited for the lease to expire (not forever), then led
    await c.aclose()


async def test_a_holder_whose_callers_all_left_releases_at_once(server: RedisServer, tmp_path: Path) -> None:
    holder, other = cache(server.url, tmp_path, "a", lock_ttl=30.0), cache(server.url, tmp_path, "b")
    ph, po = Producer(), Producer()
    ph.gate.clear()
    lead = asyncio.create_task(collect(holder, "k", ph))
    await ph.started.wait()
    waiter = asyncio.create_task(collect(other, "k", po))
    await asyncio.sleep(0.1)
    lead.cancel()
    got = await asyncio.wait_for(waiter, 5)  # far sooner than the 30 s lease
    assert got == po.out and po.calls == 1
    await holder.aclose()
    await other.aclose()


async def test_redis_down_at_start_degrades_with_one_warning_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = RedisServer(tmp_path / "redis")  # not started yet
    c = cache(srv.url, tmp_path, retry_min=0.05, retry_max=0.2)
    with caplog.at_level(logging.INFO, logger="steadytext_async"):
        for i in range(5):
            p = Producer(f"offline {i}")
            assert await collect(c, f"k{i}", p) == p.out  # generation never fails because of the cache
        assert c.backend.down  # type: ignore[union-attr]
        await c.stats()  # waits for the write-behind (a fixed sleep was too short on a loaded machine)
        assert (await c.backend.local.stats()).entries == 5  # type: ignore[union-attr]
        srv.start()
        try:
            for _ in range(100):
                if not c.backend.down:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.05)
            assert not c.backend.down  # type: ignore[union-attr]
            await collect(c, "online", Producer("online"))
            await c.aclose()
            assert srv.client().exists(f"{PREFIX}r:online") == 1
        finally:
            srv.stop()
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
    assert PASSWORD not in caplog.text and "redis://:***@127.0.0.1" in warnings[0]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_redis_stopped_mid_run_then_restarted(
    server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = cache(server.url, tmp_path, retry_min=0.05, retry_max=0.2)
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        await collect(c, "before", Producer("before"))
        await asyncio.sleep(0.05)  # write-behind
        server.stop()
        outage = [Producer(f"during {i}") for i in range(4)]
        for i, p in enumerate(outage):
            assert await collect(c, f"during{i}", p) == p.out
        assert all(p.calls == 1 for p in outage)
        server.start()  # no persistence: it comes back empty
        for _ in range(100):
            if not c.backend.down:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        again = cache(server.url, tmp_path, "b")  # another process, after the restart
        await collect(c, "after", Producer("after"))
        await c.aclose()
        got = await collect(again, "after", Producer("other"))
        assert uncached(got) == Producer("after").out
        await again.aclose()
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)


async def test_settings_select_redis_and_never_show_the_password(server: RedisServer, tmp_path: Path) -> None:
    from steadytext_async._cache import open_result_cache
    from steadytext_async._config import Settings

    settings = Settings.from_env(
        {"STEADYTEXT_CACHE_URL": server.url, "STEADYTEXT_CACHE_PREFIX": PREFIX, "STEADYTEXT_CACHE_TTL": "30"},
        cache_dir=tmp_path / "local",
    )
    assert settings.cache_url == server.url and settings.cache_ttl == 30.0 and settings.cache_prefix == PREFIX
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.cache_location
    c = open_result_cache(settings)
    assert c is not None and isinstance(c.backend, RedisBackend) and PASSWORD not in repr(c.backend)
    await collect(c, "k", Producer())
    await c.aclose()
    assert server.client().exists(f"{PREFIX}r:k") == 1


def test_cache_url_is_validated_and_redacted_without_a_server() -> None:
    from steadytext_async._config import Settings, redact_url
    from steadytext_async._exceptions import InvalidRequestError

    assert (
        redact_url("rediss://user:pw%40x@h:6380/2?ssl_cert_reqs=none")
        == "rediss://user:***@h:6380/2?ssl_cert_reqs=none"
    )
    assert redact_url("redis://h/0?password=pw") == "redis://h/0?password=***"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(InvalidRequestError) as info:
        Settings.from_env({"STEADYTEXT_CACHE_URL": "http://:topsecret@h"})
    assert "topsecret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(InvalidRequestError):
        Settings.from_env({"STEADYTEXT_CACHE_TTL": "-1"})
    assert (
        Settings.from_env({}).cache_url is None and Settings.from_env({"STEADYTEXT_CACHE_TTL": "0"}).cache_ttl is None
    )


def test_cache_cli_reports_and_clears_redis_without_the_password(
    server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from steadytext_async._cache.cli import cache_command
    from steadytext_async._config import Settings

    async def fill() -> None:
        c = cache(server.url, tmp_path)
        for key in ("k1", "k2"):
            await collect(c, key, Producer(key))
        await c.aclose()

    asyncio.run(fill())
    settings = Settings(cache_url=server.url, cache_prefix=PREFIX, cache_dir=tmp_path / "cli")
    for action in ("stats", "path", "clear", "stats"):
        assert cache_command(action, settings) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and "redis://:***@127.0.0.1" in out
    stats, path, cleared, after = (json.loads(doc) for doc in out.replace("}\n{", "}\x00{").split("\x00"))
    assert (stats["entries"], stats["misses"], stats["available"]) == (2, 2, True)
    assert path["prefix"] == PREFIX and path["url"].startswith("redis://:***@")
    assert cleared["removed_entries"] == 2 and after["entries"] == 0
    assert server.client().keys(f"{PREFIX}*") == []


async def test_a_redis_that_refuses_writes_never_fails_generation(
    server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = server.client()
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")  # every write is refused with OOM
    c = cache(server.url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        for i in range(3):
            p = Producer(f"refused {i}")
            assert await collect(c, f"k{i}", p) == p.out and p.calls == 1
        await c.aclose()
    assert not c.backend.down  # type: ignore[union-attr]  # answered with errors, but reachable
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "OutOfMemoryError" in warned[0], warned  # once, though claim/put/account all fail
    assert (await c.backend.local.stats()).entries == 3  # type: ignore[union-attr]  # kept in the local tier
    await c.aclose()


def test_one_backend_survives_a_new_event_loop(server: RedisServer, tmp_path: Path) -> None:
    b = backend(server.url, tmp_path)

    async def generate() -> list[StreamItem]:
        c = ResultCache(b)
        items = await collect(c, "k", Producer())
        await c.stats()  # waits for the write; the loop then closes without aclose
        return items

    first = asyncio.run(generate())
    got = asyncio.run(collect(ResultCache(b), "k", Producer("other")))  # same backend, new loop
    assert uncached(got) == first and not b.down and b.errors == 0
    asyncio.run(b.aclose())
    # The first loop's connections could not be closed once that loop had closed: the backend dropped them, and the
    # collector reclaims them here (with the standard warning) instead of in whichever test runs next.
    with pytest.warns(ResourceWarning):
        gc.collect()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_uses_the_parents_connection(server: RedisServer, tmp_path: Path) -> None:
    c = cache(server.url, tmp_path)

    async def parent_fill() -> None:
        await collect(c, "k", Producer())
        await c.stats()  # waits for the write-behind; the connection pool stays open across the fork

    async def parent_check() -> None:
        fresh = cache(server.url, tmp_path, "b")
        assert uncached(await collect(fresh, "k2", Producer())) == Producer("made in the child").out
        await fresh.aclose()
        await c.aclose()

    # one loop for the parent's whole life, so that its connections are closed on the loop they were opened on
    with asyncio.Runner() as parent:
        parent.run(parent_fill())
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:

                async def child() -> bool:
                    produce = Producer("made in the child")
                    made = await collect(c, "k2", produce)
                    await c.aclose()
                    return produce.calls == 1 and made == produce.out and not c.backend.down  # type: ignore[union-attr]

                code = 0 if asyncio.run(asyncio.wait_for(child(), 20)) else 1
            finally:
                os._exit(code)
        assert reap(pid, 30) == 0
        parent.run(parent_check())
    assert c.backend.errors == 0  # type: ignore[union-attr]
