"""A cluster through its load balancer (CI tier): three ``serve`` replicas behind HAProxy running the shipped
``deploy/haproxy.cfg``, one redis-server, all started by ``deploy/cluster.py``.

1,000 requests over 200 distinct prompts from 64 concurrent clients give exactly 200 generations across the
cluster, every answer byte-identical (text, token ids, cache key) to a one-process run, and 200 correct entries in
Redis. To fit CI's time on 2 shared cores the replicas here generate with a deterministic stub model on loopback
(``StubModel``: every generation takes 50 ms and is counted where it happens, so "one generation per prompt" is
counted exactly); everything else — serve, the SDK's cache and single-flight, Redis, HAProxy — is the real thing.
``test_cluster_faults.py`` (slow tier) runs the same load on the embedded model, with faults (SIGKILL, Redis
restart, rolling restart) and the cache-affinity measurement.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _cluster_load import (
    STUB_MODEL,
    Cluster,
    Golden,
    StubModel,
    check,
    goldens,
    need_binaries,
    prompts,
    run_load,
    sum_metric,
)

PROMPTS = 200
REQUESTS = 1000
CLIENTS = 64


@pytest.fixture(scope="module")
def stub() -> Iterator[StubModel]:
    with StubModel() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEADYTEXT_VLLM_BASE_URL", server.url)  # for the goldens here and (inherited) the replicas
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, stub: StubModel) -> Iterator[Cluster]:
    need_binaries()
    with Cluster(tmp_path_factory.mktemp("cluster"), serve_args=["--allow-remote", "--no-preload"]) as c:
        yield c


@pytest.fixture(scope="module")
def gold(stub: StubModel) -> dict[str, Golden]:
    golden = goldens(prompts(PROMPTS), model=STUB_MODEL)
    stub.reset()
    return golden


def test_one_generation_per_prompt_across_the_cluster(
    cluster: Cluster, gold: dict[str, Golden], stub: StubModel
) -> None:
    outcomes, wall, _ = run_load(cluster.url, prompts(PROMPTS), requests=REQUESTS, clients=CLIENTS, model=STUB_MODEL)
    figures = check(cluster, outcomes, gold)
    texts = [cluster.metrics(i) for i in range(3)]
    generations = stub.generations()
    print(figures.line("no fault (stub model)", generations, wall))
    assert figures.requests == REQUESTS
    assert figures.failures == 0, figures.failed
    assert figures.mismatches == 0
    assert generations == PROMPTS  # single-flight: in each replica, and across replicas through Redis
    assert sum_metric(texts, "steadytext_cache_lookup_misses_total") == PROMPTS
    assert figures.redis_entries == PROMPTS and figures.local_entries == 0 and figures.wrong_entries == 0
    # every request that did not generate is a hit of exactly one tier
    hits = sum(sum_metric(texts, f'steadytext_cache_tier_hits_total{{tier="{t}"}}') for t in ("process", "redis"))
    assert hits == REQUESTS - PROMPTS
    assert sum_metric(texts, 'steadytext_cache_tier_hits_total{tier="local"}') == 0
    assert sum_metric(texts, 'steadytext_requests_total{endpoint="completions",status="200"}') == REQUESTS
    # with affinity every replica served a share, and repeats of a prompt went to one replica (no cluster waits)
    served = [sum_metric([t], 'steadytext_requests_total{endpoint="completions",status="200"}') for t in texts]
    assert all(n > 0 for n in served), served


def test_metrics_name_each_replica(cluster: Cluster) -> None:
    for i, replica in enumerate(cluster.replicas):
        text = cluster.metrics(i)
        assert f'steadytext_replica_info{{replica="{replica.name}",version=' in text
        for sample in (
            'steadytext_singleflight_waits_total{scope="process"}',
            'steadytext_singleflight_waits_total{scope="cluster"}',
            'steadytext_cache_tier_hits_total{tier="redis"}',
            "steadytext_generations_total",
            "steadytext_cache_lookup_misses_total",
        ):
            assert f"\n{sample} " in text, sample


def test_the_balancer_checks_health_and_retries(cluster: Cluster, gold: dict[str, Golden]) -> None:
    """A replica that stops listening is retried around (no client sees it) and taken out by the checks."""
    cluster.kill(2)
    try:
        prompt = prompts(1)[0]
        for _ in range(6):  # some of these are sent to r3 before the checks notice: HAProxy redispatches them
            body = {"prompt": prompt, "max_tokens": 3, "model": STUB_MODEL}
            response = httpx.post(cluster.url + "/v1/completions", json=body, timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["text"] == gold[prompt].text
        cluster.wait_lb("r3", "DOWN", timeout=15)
    finally:
        cluster.start_replica(2)
    assert cluster.lb_status() == {"r1": "UP", "r2": "UP", "r3": "UP"}


def test_the_shipped_config_is_the_one_running(cluster: Cluster) -> None:
    config = (Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /health" in config and "retry-on" in config and "option redispatch" in config
    popen = cluster.haproxy.popen
    assert popen is not None and isinstance(popen.args, list)
    args = [os.fsdecode(a) for a in popen.args]
    assert "-f" in args and Path(args[-1]).name == "haproxy.cfg"
