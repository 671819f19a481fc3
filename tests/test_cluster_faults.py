"""Faults under load, through the load balancer: a replica SIGKILLed, Redis restarted, a rolling restart (SIGTERM
drain, one replica at a time), and the cache-affinity measurement.

Each run sends at least 1,000 requests over 200 prompts not used before from 64 concurrent clients, injects its
fault after 300 answers, and then checks: no failed request, every answer byte-identical to a one-process run, and
every cache entry (Redis and each replica's sqlite file) equal to the golden of its key. The figures (requests,
generations, failures, mismatches) are printed (``-s``). ``stub`` runs on the deterministic stub model (CI tier;
generations counted exactly at the stub); ``model`` runs the same on the embedded model (slow tier; generations
from the replicas' ``steadytext_generations_total``, fewer requests because 2 cores are shared by 3 replicas).
Everything here is in the slow tier (``-m slow``: about 5 minutes on the stub, 30 or more on the embedded model
with 2 cores shared); CI runs the SIGKILL run on the stub in its bounded slow selection (about a minute on a loaded
2-core box).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import httpx
import pytest
from _cluster_load import (
    MAX_TOKENS,
    STUB_MODEL,
    Cluster,
    StubModel,
    check,
    goldens,
    need_binaries,
    prompts,
    run_load,
    sum_metric,
)

CLIENTS = 64
FAULT_AFTER = 300


@dataclasses.dataclass
class Setup:
    cluster: Cluster
    model: str | None  # None: the embedded model
    stub: StubModel | None
    prompts: int
    requests: int

    def generations(self) -> float:
        """Generations so far across the cluster (stub: counted at the stub; model: the live replicas' counters)."""
        if self.stub is not None:
            return self.stub.generations()
        return sum_metric(self.metrics(), "steadytext_generations_total")

    def metrics(self) -> list[str]:
        return [self.cluster.metrics(i) for i, r in enumerate(self.cluster.replicas) if r.alive]

    def gold(self, start: int) -> dict[str, object]:
        golden = goldens(prompts(self.prompts, start), model=self.model)
        if self.stub is not None:
            self.stub.reset()
        return golden  # type: ignore[return-value]


@pytest.fixture(
    scope="module",
    params=["stub", pytest.param("model", marks=[pytest.mark.slow, pytest.mark.timeout(3600)])],
    ids=["stub", "model"],
)
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_binaries()
    workdir = tmp_path_factory.mktemp(f"cluster-{request.param}")
    if request.param == "model":
        with Cluster(workdir, shutdown_timeout=60) as c:
            yield Setup(c, None, None, prompts=60, requests=300)
        return
    with StubModel() as stub, pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEADYTEXT_VLLM_BASE_URL", stub.url)
        with Cluster(workdir, serve_args=["--allow-remote", "--no-preload"]) as c:
            yield Setup(c, STUB_MODEL, stub, prompts=200, requests=1000)


def _lb_retries(cluster: Cluster) -> tuple[int, int]:
    rows = cluster.lb_counters().values()
    return sum(int(r["wretr"] or 0) for r in rows), sum(int(r["wredis"] or 0) for r in rows)


def _run(
    setup: Setup, name: str, start: int, fault: object = None, fault_after: int = FAULT_AFTER
) -> tuple[object, float]:
    gold = setup.gold(start)
    setup.cluster.flush_redis()  # only this run's entries are checked (their prompts are this run's own)
    before = setup.generations()
    retries_before = _lb_retries(setup.cluster)
    outcomes, wall, value = run_load(
        setup.cluster.url,
        prompts(setup.prompts, start),
        requests=setup.requests,
        clients=CLIENTS,
        model=setup.model,
        fault=fault,  # type: ignore[arg-type]
        fault_after=fault_after,
    )
    figures = check(setup.cluster, outcomes, gold)  # type: ignore[arg-type]
    generations = setup.generations() - before + (value if isinstance(value, float) else 0.0)
    retries = [a - b for a, b in zip(_lb_retries(setup.cluster), retries_before, strict=True)]
    line = figures.line(f"{name} ({'stub' if setup.stub else 'model'})", generations, wall)
    print(f"{line} lb_retries={retries[0]} lb_redispatches={retries[1]}")
    assert figures.requests >= setup.requests
    assert figures.failures == 0, figures.failed
    assert figures.mismatches == 0
    assert figures.wrong_entries == 0
    assert generations >= setup.prompts
    return value, generations


@pytest.mark.slow  # tests/test_cluster.py runs it in CI
def test_no_fault(setup: Setup) -> None:
    _, generations = _run(setup, "no fault", 0)
    assert generations == setup.prompts  # one generation per prompt across the cluster


@pytest.mark.slow  # .ci/run runs it (stub model) in its slow selection; tests/test_cluster.py covers the cluster
def test_sigkill_one_replica_mid_run(setup: Setup) -> None:
    cluster = setup.cluster

    def fault() -> float:
        generated = sum_metric([cluster.metrics(1)], "steadytext_generations_total") if setup.stub is None else 0.0
        cluster.kill(1)  # its in-flight requests break off: HAProxy resends them to another replica
        return generated  # the killed replica's count (model runs), lost with it

    try:
        _, generations = _run(setup, "SIGKILL r2", 10_000, fault)
        assert generations <= setup.prompts + CLIENTS  # at most the killed replica's in-flight work is redone
    finally:
        cluster.start_replica(1)


@pytest.mark.slow
def test_redis_restarted_mid_run(setup: Setup) -> None:
    cluster = setup.cluster

    def fault() -> None:
        cluster.stop_redis()
        time.sleep(2.0)  # requests go on: each replica generates locally meanwhile
        cluster.start_redis()

    _run(setup, "Redis restart", 20_000, fault, fault_after=20)  # early: most prompts are generated while it is away
    # the cache is used again: a prompt generated on r1 is a Redis hit on r2 and r3 (once each has reconnected)
    deadline = time.monotonic() + 90
    body: dict[str, object] = {"max_tokens": 3, **({"model": setup.model} if setup.model else {})}
    i = 0
    while True:
        i += 1
        prompt = f"after the restart {i}: the"
        answers = [
            httpx.post(cluster.replica_url(r) + "/v1/completions", json={**body, "prompt": prompt}, timeout=120)
            for r in range(3)
        ]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        if [a.json()["steadytext"]["cached"] for a in answers] == [False, True, True]:
            break
        assert time.monotonic() < deadline, "the replicas did not use Redis again within 90 s"
        time.sleep(1.0)
    texts = setup.metrics()
    assert sum_metric(texts[1:], 'steadytext_cache_tier_hits_total{tier="redis"}') >= 2


@pytest.mark.slow
def test_rolling_restart(setup: Setup) -> None:
    cluster = setup.cluster
    codes: list[int] = []

    def fault() -> float:
        generated = 0.0  # model runs: each replica's count before it restarts (a restart starts from 0)
        for i in range(len(cluster.replicas)):
            if setup.stub is None:
                generated += sum_metric([cluster.metrics(i)], "steadytext_generations_total")
            codes.append(cluster.restart(i))
        return generated

    _run(setup, "rolling restart", 30_000, fault)
    assert codes == [0, 0, 0]  # every replica drained and exited cleanly


@pytest.mark.slow
@pytest.mark.parametrize("affinity", [False, True], ids=["affinity-off", "affinity-on"])
def test_cache_affinity(setup: Setup, affinity: bool) -> None:
    """The same load with and without the balancer's request hashing: generations, hits by tier, waits, wall."""
    cluster = setup.cluster
    cluster.restart_haproxy(affinity=affinity)
    try:
        before = setup.metrics()
        start = 40_000 if affinity else 50_000
        _run(setup, f"affinity {'on' if affinity else 'off'}", start)
        after = setup.metrics()
    finally:
        cluster.restart_haproxy(affinity=True)

    def delta(name: str) -> float:
        return sum_metric(after, name) - sum_metric(before, name)

    tiers = {t: delta(f'steadytext_cache_tier_hits_total{{tier="{t}"}}') for t in ("process", "redis", "local")}
    waits = {s: delta(f'steadytext_singleflight_waits_total{{scope="{s}"}}') for s in ("process", "cluster")}
    print(f"  affinity {'on' if affinity else 'off'}: hits {tiers}, single-flight waits {waits}")
    if affinity:  # identical requests all reach one replica: they never wait on another replica's lease
        assert waits["cluster"] == 0 and tiers["redis"] == 0


@pytest.mark.slow
def test_throughput_three_replicas_against_one(setup: Setup) -> None:
    """Distinct prompts (every request generates), interleaved rounds: through the balancer to 3 replicas, and
    straight to one replica. Reported, not asserted: the replicas share this host's cores."""
    if setup.stub is not None:
        pytest.skip("generation throughput needs the model")
    cluster = setup.cluster
    rates: dict[str, list[float]] = {"3 replicas": [], "1 replica": []}
    for round_ in range(2):
        for name, url in (("3 replicas", cluster.url), ("1 replica", cluster.replica_url(0))):
            start = 60_000 + 1000 * round_ + (0 if name == "3 replicas" else 500)
            outcomes, wall, _ = run_load(url, prompts(12, start), requests=12, clients=12, model=setup.model)
            assert all(o.status == 200 for o in outcomes)
            rates[name].append(len(outcomes) / wall)
    print(f"throughput (requests/s, {MAX_TOKENS} tokens, 12 concurrent, 2 rounds): {rates}")
