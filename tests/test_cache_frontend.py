"""ResultCache: single-flight, cancellation isolation, what is stored, replay, write-behind, no orphan tasks."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from _cache_helpers import stream_items
from conftest import reap

from steadytext_async._cache import NO_CLAIM, CachedEntry, CacheStats, Claim, ResultCache, SqliteBackend, StreamItem
from steadytext_async._models import GenerationResult

items = stream_items


class Producer:
    """A fake generation: counts calls, can be held at a gate after the first chunk, can fail."""

    def __init__(self, out: list[StreamItem] | None = None, *, fail: bool = False) -> None:
        self.out = out if out is not None else items()
        self.fail = fail
        self.calls = 0
        self.closed = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self) -> AsyncIterator[StreamItem]:
        self.calls += 1
        try:
            for i, item in enumerate(self.out):
                if i == 1:
                    self.started.set()
                    await self.gate.wait()
                await asyncio.sleep(0)
                if self.fail and i == 2:
                    raise RuntimeError("generation failed")
                yield item
        finally:
            self.closed += 1


async def collect(cache: ResultCache, key: str, produce: Producer, variant: str = "") -> list[StreamItem]:
    return [item async for item in cache.stream(key, produce, variant=variant)]


def uncached(seq: list[StreamItem]) -> list[StreamItem]:
    return [i.model_copy(update={"cached": False}) if isinstance(i, GenerationResult) else i for i in seq]


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "results.sqlite3"


async def test_sixteen_concurrent_identical_requests_generate_once(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    produce.gate.clear()
    tasks = [asyncio.create_task(collect(cache, "k", produce)) for _ in range(16)]
    await produce.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    produce.gate.set()
    results = await asyncio.gather(*tasks)
    assert produce.calls == 1
    assert all(r == results[0] for r in results)
    assert results[0] == produce.out
    await cache.aclose()


async def test_cancelling_waiters_including_the_first_does_not_cancel_the_others(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    produce.gate.clear()
    tasks = [asyncio.create_task(collect(cache, "k", produce)) for _ in range(16)]
    await produce.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    tasks[0].cancel()  # the one that started the generation
    tasks[7].cancel()
    await asyncio.sleep(0)
    produce.gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError) and isinstance(done[7], asyncio.CancelledError)
    rest = [r for i, r in enumerate(done) if i not in (0, 7)]
    assert all(r == produce.out for r in rest)
    assert produce.calls == 1
    await cache.aclose()
    assert (await SqliteBackend(sqlite_path).get("k")) is not None  # production finished, so it was stored


async def test_cancelling_every_waiter_cancels_generation_and_stores_nothing(sqlite_path: Path) -> None:
    backend = SqliteBackend(sqlite_path)
    cache = ResultCache(backend)
    produce = Producer()
    produce.gate.clear()
    tasks = [asyncio.create_task(collect(cache, "k", produce)) for _ in range(3)]
    await produce.started.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0)
    assert produce.closed == 1  # the generator was closed (its worker would be stopped)
    assert not cache._tasks and not cache._flights
    await cache.aclose()
    assert await backend.get("k") is None
    produce.gate.set()
    cache2 = ResultCache(SqliteBackend(sqlite_path))
    assert await collect(cache2, "k", produce) == produce.out
    assert produce.calls == 2
    await cache2.aclose()


async def test_a_consumer_that_stops_early_does_not_store(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    stream = cache.stream("k", produce)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    await cache.aclose()
    assert await SqliteBackend(sqlite_path).get("k") is None


async def test_failed_generation_reaches_every_waiter_and_is_not_stored(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer(fail=True)
    produce.gate.clear()
    tasks = [asyncio.create_task(collect(cache, "k", produce)) for _ in range(4)]
    await produce.started.wait()
    produce.gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(d, RuntimeError) for d in done)
    assert produce.calls == 1
    produce.fail = False
    assert await collect(cache, "k", produce) == produce.out  # retried, not served from a cache
    assert produce.calls == 2
    await cache.aclose()


async def test_fallback_result_is_not_stored(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer(items(fallback=True, logprobs=False))
    assert await collect(cache, "k", produce) == produce.out
    assert await collect(cache, "k", produce) == produce.out
    assert produce.calls == 2
    await cache.aclose()
    assert (await SqliteBackend(sqlite_path).stats()).entries == 0


async def test_inconsistent_stream_is_not_stored(sqlite_path: Path) -> None:
    out = items()
    bad = [*out[:-2], out[-1]]  # a chunk missing: chunks no longer add up to the result text
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer(bad)
    await collect(cache, "k", produce)
    await collect(cache, "k", produce)
    assert produce.calls == 2
    await cache.aclose()


async def test_hit_replays_the_identical_stream_from_memory_and_from_disk(sqlite_path: Path) -> None:
    produce = Producer()
    cache = ResultCache(SqliteBackend(sqlite_path))
    live = await collect(cache, "k", produce)
    memory = await collect(cache, "k", produce)
    await cache.aclose()
    fresh = ResultCache(SqliteBackend(sqlite_path))  # like another process: empty front layer
    disk = await collect(fresh, "k", produce)
    await fresh.aclose()
    assert produce.calls == 1
    assert live == produce.out
    for replay in (memory, disk):
        assert uncached(replay) == live
        final = replay[-1]
        assert isinstance(final, GenerationResult) and final.cached
        assert [c.text for c in replay[:-1]] == [c.text for c in live[:-1]]  # same boundaries
    live_final = live[-1]
    assert isinstance(live_final, GenerationResult) and not live_final.cached


async def test_other_processes_writes_are_seen_on_a_front_miss(sqlite_path: Path) -> None:
    a = ResultCache(SqliteBackend(sqlite_path))
    b = ResultCache(SqliteBackend(sqlite_path))
    pa, pb = Producer(), Producer()
    assert await collect(b, "other", pb) == pb.out  # b is warm and has its connection open
    await collect(a, "k", pa)
    await a.aclose()  # a's write-behind is finished
    got = await collect(b, "k", pb)
    assert uncached(got) == pa.out and pb.calls == 1
    await b.aclose()


class SlowBackend:
    """A backend whose writes block until released (to prove the caller never waits for them)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.stored: dict[str, CachedEntry] = {}
        self.accounted: list[tuple[dict[str, int], int]] = []

    async def get(self, key: str) -> CachedEntry | None:
        return self.stored.get(key)

    async def put(self, key: str, entry: CachedEntry) -> None:
        await self.release.wait()
        self.stored[key] = entry

    async def account(self, hits: Mapping[str, int], misses: int) -> None:
        self.accounted.append((dict(hits), misses))

    async def claim(self, key: str) -> Claim:
        return NO_CLAIM

    async def stats(self) -> CacheStats:
        return CacheStats(entries=len(self.stored))

    async def clear(self) -> None:
        self.stored.clear()

    async def aclose(self) -> None:
        pass


async def test_write_behind_never_delays_the_caller() -> None:
    backend = SlowBackend()
    cache = ResultCache(backend)
    produce = Producer()
    assert await asyncio.wait_for(collect(cache, "k", produce), 5) == produce.out  # put is still blocked
    assert backend.stored == {}
    assert uncached(await collect(cache, "k", produce)) == produce.out  # served by the front layer meanwhile
    backend.release.set()
    await cache.aclose()  # waits for the pending write
    assert "k" in backend.stored and produce.calls == 1
    assert sum(m for _, m in backend.accounted) == 1
    assert sum(h.get("k", 0) for h, _ in backend.accounted) == 1


class BrokenBackend(SlowBackend):
    async def get(self, key: str) -> CachedEntry | None:
        raise OSError("backend down")

    async def put(self, key: str, entry: CachedEntry) -> None:
        raise OSError("backend down")


async def test_a_raising_backend_never_fails_generation(caplog: pytest.LogCaptureFixture) -> None:
    cache = ResultCache(BrokenBackend())
    produce = Producer()
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        assert await collect(cache, "k", produce) == produce.out
        await cache.aclose()
        assert await collect(cache, "k2", produce) == produce.out
        await cache.aclose()
    assert any("backend down" in r.getMessage() for r in caplog.records)


async def test_aclose_gives_up_on_a_hung_write() -> None:
    backend = SlowBackend()  # never released
    cache = ResultCache(backend, close_timeout=0.05)
    produce = Producer()
    assert await collect(cache, "k", produce) == produce.out
    await cache.aclose()
    assert not cache._tasks and backend.stored == {}


async def test_variants_do_not_share_a_live_generation(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    produce.gate.clear()
    t1 = asyncio.create_task(collect(cache, "k", produce, variant="strict"))
    t2 = asyncio.create_task(collect(cache, "k", produce, variant=""))
    await produce.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    produce.gate.set()
    r1, r2 = await asyncio.gather(t1, t2)
    assert r1 == r2 == produce.out and produce.calls == 2
    await cache.aclose()


async def test_aclose_cancels_flights_and_leaves_no_task(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    produce.gate.clear()
    waiter = asyncio.create_task(collect(cache, "k", produce))
    await produce.started.wait()
    before = asyncio.all_tasks()
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert produce.closed == 1
    assert not cache._tasks and not cache._flights
    assert not {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}
    produce.gate.set()
    assert await collect(cache, "k", produce) == produce.out  # usable again after aclose
    await cache.aclose()


async def test_front_layer_is_bounded(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path), front_entries=3)
    for i in range(10):
        await collect(cache, f"k{i}", Producer(items(f"text number {i}")))
    assert len(cache._front) == 3
    stats = await cache.stats()
    assert stats.entries == 10 and stats.misses == 10
    await cache.clear()
    assert len(cache._front) == 0 and (await cache.stats()).entries == 0
    await cache.aclose()


async def test_hit_ratio_counts_front_backend_and_joined_hits(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    await collect(cache, "k", produce)
    for _ in range(3):
        await collect(cache, "k", produce)
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.hit_ratio) == (3, 1, 0.75)
    await cache.aclose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_fresh_connection(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))

    async def parent_fill() -> None:
        await collect(cache, "k", Producer())
        await cache.stats()  # waits for the write-behind

    asyncio.run(parent_fill())  # the parent's connection stays open across the fork
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:

            async def child() -> bool:
                produce = Producer(items("made in the child"))
                hit = await collect(cache, "k", produce)
                made = await collect(cache, "k2", produce)
                await cache.aclose()
                return produce.calls == 1 and uncached(hit) == items() and made == produce.out

            code = 0 if asyncio.run(asyncio.wait_for(child(), 20)) else 1
        finally:
            os._exit(code)
    assert reap(pid, 30) == 0

    async def parent_check() -> None:
        got = await collect(cache, "k2", Producer())
        assert uncached(got) == items("made in the child")
        await cache.aclose()

    asyncio.run(parent_check())


async def test_peek_answers_hot_hits_from_another_thread(sqlite_path: Path) -> None:
    cache = ResultCache(SqliteBackend(sqlite_path))
    produce = Producer()
    live = await collect(cache, "k", produce)
    assert await asyncio.to_thread(cache.peek, "missing") is None
    peeked = await asyncio.to_thread(cache.peek, "k")
    assert peeked is not None and uncached(list(peeked)) == live
    final = peeked[-1]
    assert isinstance(final, GenerationResult) and final.cached
    await asyncio.sleep(0)  # the hit is accounted on the cache's loop
    stats = await cache.stats()
    assert (stats.hits, stats.misses) == (1, 1)
    await cache.aclose()


async def test_hits_peeked_from_other_threads_are_all_accounted_with_few_wakeups(sqlite_path: Path) -> None:
    """peek() answers a hot hit on the caller's thread; its accounting reaches the cache's loop in batches (one
    cross-thread wake-up per batch, which halved a sync hit's latency), and no hit is lost."""
    cache = ResultCache(SqliteBackend(sqlite_path))
    await collect(cache, "k", Producer())  # stored, hot in the front layer
    drains = 0
    account = cache._account_peeked

    def counting() -> None:
        nonlocal drains
        drains += 1
        account()

    cache._account_peeked = counting  # type: ignore[method-assign]
    hot = await asyncio.to_thread(lambda: [cache.peek("k") for _ in range(1000)])
    assert all(h is not None and isinstance(h[-1], GenerationResult) for h in hot)
    assert cache.hits == 1000  # counted at once, accounted or not
    assert drains < 100  # one wake-up per batch, not one per hit
    stats = await cache.stats()  # flushes the rest
    assert stats.hits == 1000 and cache.hits == 1000
    await cache.aclose()
    reopened = ResultCache(SqliteBackend(sqlite_path))
    assert (await reopened.stats()).hits == 1000  # persisted by the backend
    await reopened.aclose()
