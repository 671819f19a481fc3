"""The counters behind a cluster's ``/metrics``: hits by tier (process, redis, local) and single-flight waits (process,
cluster), on two ResultCaches over one real redis-server standing for two replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _redis_server import (
    RedisServer,
    redis_server_fixture,  # noqa: F401 - the "server" fixture (a redis-server)
)
from test_cache_redis import Producer, cache, collect

from steadytext_async.serve._engine import cache_tiers


async def test_hits_by_tier_and_single_flight_waits(server: RedisServer, tmp_path: Path) -> None:
    a, b = cache(server.url, tmp_path, "a"), cache(server.url, tmp_path, "b")
    pa, pb = Producer(), Producer()
    pa.gate.clear()
    lead = asyncio.create_task(collect(a, "k", pa))
    await pa.started.wait()
    joined = asyncio.create_task(collect(a, "k", pa))  # same process: joins the running flight
    elsewhere = asyncio.create_task(collect(b, "k", pb))  # another replica: waits on the Redis lease
    async with asyncio.timeout(30):  # until the other replica waits on the lease (a loaded machine can be slow)
        while getattr(b.backend, "claim_waits", 0) == 0:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.01)
    pa.gate.set()
    await asyncio.gather(lead, joined, elsewhere)
    await collect(a, "k", pa)  # the front layer
    assert pa.calls == 1 and pb.calls == 0
    assert cache_tiers(a) == {
        "hits_process": 2,
        "hits_redis": 0,
        "hits_local": 0,
        "waits_process": 1,
        "waits_cluster": 0,
    }
    assert cache_tiers(b) == {
        "hits_process": 0,
        "hits_redis": 1,
        "hits_local": 0,
        "waits_process": 0,
        "waits_cluster": 1,
    }
    await a.aclose()
    await b.aclose()
    server.stop()  # Redis away: results go to, and come from, each process's local file
    c = cache(server.url, tmp_path, "c")
    await collect(c, "k2", Producer())
    await c.aclose()  # the local write is finished
    d = cache(server.url, tmp_path, "c")  # a restarted process on the same host: the same local file
    pd = Producer()
    await collect(d, "k2", pd)
    assert pd.calls == 0 and cache_tiers(d)["hits_local"] == 1 and cache_tiers(d)["hits_redis"] == 0
    await d.aclose()
    assert set(cache_tiers(None).values()) == {0}


def test_metrics_endpoint_names_the_replica_and_keeps_the_old_series(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from steadytext_async._config import Settings
    from steadytext_async.serve import ServeConfig, create_app

    monkeypatch.setenv("STEADYTEXT_REPLICA_ID", "replica-7")
    app = create_app(ServeConfig(settings=Settings.from_env(), preload=False))
    with TestClient(app) as client:
        text = client.get("/metrics").text
    assert 'steadytext_replica_info{replica="replica-7",version="' in text
    for sample in (
        'steadytext_cache_tier_hits_total{tier="process"} 0.0',
        'steadytext_cache_tier_hits_total{tier="redis"} 0.0',
        'steadytext_cache_tier_hits_total{tier="local"} 0.0',
        'steadytext_singleflight_waits_total{scope="process"} 0.0',
        'steadytext_singleflight_waits_total{scope="cluster"} 0.0',
        "steadytext_generations_total 0.0",
        "steadytext_workers 0.0",
        "steadytext_queue_depth 0.0",
    ):
        assert f"\n{sample}\n" in text, sample
