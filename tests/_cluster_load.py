"""Load through the cluster's load balancer, with a fault injected mid-run, and the checks every cluster test makes.

``run_load`` sends ``requests`` completions over ``prompts`` from ``clients`` concurrent connections; after
``fault_after`` answered requests it runs ``fault`` in a thread while the load goes on. ``check`` compares every
answer with the goldens of a one-process run and every cache entry (Redis and each replica's sqlite file) with the
golden of its key, and returns the figures the closing note reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from _remote_servers import Action, ScriptedServer, Seen, chat_doc, chat_events

import steadytext_async as st
from steadytext_async._cache import CACHE_FILENAME, SqliteBackend
from steadytext_async._cache.redis import RedisBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy"))
from cluster import Cluster  # deploy/ is not a package: the harness users run, imported as is

__all__ = [
    "MAX_TOKENS",
    "STUB_MODEL",
    "Cluster",
    "Golden",
    "Outcome",
    "StubModel",
    "check",
    "goldens",
    "need_binaries",
    "prompts",
    "run_load",
    "sum_metric",
]

MAX_TOKENS = 3  # generated tokens per request: enough to differ per prompt, cheap on 2 shared cores
REQUEST_TIMEOUT = 120.0


STUB_MODEL = "vllm:stub"  # the vllm preset (no API key) pointed at a StubModel by STEADYTEXT_VLLM_BASE_URL


class StubModel(ScriptedServer):
    """A deterministic OpenAI-compatible model on loopback for the CI-tier cluster: its answer is a function of the
    prompt, each answer takes ``delay`` seconds (a generation that concurrent identical requests can overlap), and
    ``generations()`` counts what it was asked, across every replica."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.delay = delay
        self.default = self._answer

    @staticmethod
    def words(prompt: str) -> list[str]:
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        return [("" if i == 0 else " ") + digest[8 * i : 8 * i + 8] for i in range(MAX_TOKENS)]

    def _answer(self, seen: Seen) -> Action:
        body = seen.body if isinstance(seen.body, dict) else {}
        words = self.words(str(body.get("messages", [{}])[-1].get("content")))
        if body.get("stream"):
            return Action("sse", events=chat_events(words))
        return Action("json", body=chat_doc("".join(words)))

    async def _act(self, a: Action, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(self.delay)
        return await super()._act(a, seen, reader, writer)

    def generations(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")


def need_binaries() -> None:
    """Skip (fail under CI=true, where .ci/run installs them) when haproxy or redis-server is missing."""
    path = os.environ.get("PATH", "") + ":/usr/sbin"
    missing = [b for b in ("haproxy", "redis-server") if shutil.which(b, path=path) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install -y haproxy redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the cluster tests", pytrace=False)
        pytest.skip(reason)


def prompts(n: int, start: int = 0) -> list[str]:
    """``n`` distinct short prompts (a test run takes its own range, so no run finds another's answers cached)."""
    return [f"Note {i}: the" for i in range(start, start + n)]


@dataclasses.dataclass(frozen=True)
class Golden:
    text: str
    token_ids: tuple[int, ...]
    key: str  # inputs_sha256: the cache key, and the response's system_fingerprint


@dataclasses.dataclass
class Outcome:
    prompt: str
    status: int
    text: str | None = None
    token_ids: tuple[int, ...] = ()
    key: str | None = None
    fallback: bool = False
    error: str | None = None


def goldens(items: list[str], model: str | None = None) -> dict[str, Golden]:
    """One process, no cache: what every replica must answer, byte for byte (``model``: a remote model id)."""
    kwargs: dict[str, Any] = {"max_new_tokens": MAX_TOKENS}
    if model is not None:
        kwargs.update(model=model, unsafe_mode=True)

    async def run() -> dict[str, Golden]:
        async with st.AsyncSteadyText(workers=1, threads=2, cache_disabled=True) as sdk:
            results = await asyncio.gather(*(sdk.generate(p, **kwargs) for p in items))
        out = {}
        for p, r in zip(items, results, strict=True):
            key = r.fingerprint.inputs_sha256
            assert not r.fallback and key is not None, r  # every model here is cacheable: the key is known
            out[p] = Golden(r.text, tuple(r.token_ids), key)
        return out

    return asyncio.run(run())


async def _one(client: httpx.AsyncClient, prompt: str, headers: dict[str, str], model: str | None) -> Outcome:
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": MAX_TOKENS}
    if model is not None:
        body["model"] = model
    try:
        response = await client.post("/v1/completions", json=body, headers=headers, timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        return Outcome(prompt, 0, error=repr(exc))
    if response.status_code != 200:
        return Outcome(prompt, response.status_code, error=response.text[:500])
    data = response.json()
    ext = data["steadytext"]
    return Outcome(
        prompt, 200, data["choices"][0]["text"], tuple(ext["token_ids"]), data["system_fingerprint"], ext["fallback"]
    )


def run_load(
    url: str,
    items: list[str],
    *,
    requests: int,
    clients: int = 64,
    fault: Callable[[], object] | None = None,
    fault_after: int = 0,
    affinity_header: bool = False,
    model: str | None = None,
    seed: int = 0,
) -> tuple[list[Outcome], float, Any]:
    """Answers of at least ``requests`` requests (prompts in a shuffled, repeating order; the load goes on until
    ``fault()`` has returned), the wall time and ``fault()``'s value."""
    order = [items[i % len(items)] for i in range(requests)]
    random.Random(seed).shuffle(order)

    async def run() -> tuple[list[Outcome], float, Any]:
        sent = 0
        out: list[Outcome] = []
        fault_task: asyncio.Future[Any] | None = None
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

        def more() -> bool:
            return sent < requests or (fault is not None and (fault_task is None or not fault_task.done()))

        async def client_loop(client: httpx.AsyncClient) -> None:
            nonlocal fault_task, sent
            while more():
                if sent >= requests:  # only waiting for the fault to finish: keep up a light load
                    await asyncio.sleep(0.05)
                prompt = order[sent % len(order)]
                sent += 1
                headers = {"X-SteadyText-Affinity": prompt} if affinity_header else {}
                out.append(await _one(client, prompt, headers, model))
                if fault is not None and fault_task is None and len(out) >= fault_after:
                    fault_task = asyncio.ensure_future(asyncio.to_thread(fault))

        t0 = time.perf_counter()
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
        value = await fault_task if fault_task is not None else None
        return out, wall, value

    return asyncio.run(run())


def sum_metric(texts: list[str], name: str) -> float:
    """The sum over replicas of one sample (``name`` with its labels) in Prometheus text."""
    total = 0.0
    for text in texts:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        total += float(m.group(1)) if m else 0.0
    return total


@dataclasses.dataclass
class Figures:
    requests: int
    failures: int
    mismatches: int
    redis_entries: int
    local_entries: int
    wrong_entries: int
    failed: list[Outcome]

    def line(self, name: str, generations: float, wall: float) -> str:
        return (
            f"{name}: requests={self.requests} generations={generations:.0f} failures={self.failures} "
            f"mismatches={self.mismatches} wrong_cache_entries={self.wrong_entries} redis_entries={self.redis_entries} "
            f"local_entries={self.local_entries} wall={wall:.1f}s"
        )


def check(cluster: Cluster, outcomes: list[Outcome], gold: dict[str, Golden]) -> Figures:
    """Count failed and mismatching answers; read back every cache entry and compare it with its golden."""
    failed = [o for o in outcomes if o.status != 200]
    mismatches = 0
    for o in outcomes:
        if o.status != 200:
            continue
        g = gold[o.prompt]
        if o.fallback or o.text != g.text or o.token_ids != g.token_ids or o.key != g.key:
            mismatches += 1
    by_key = {g.key: g for g in gold.values()}
    redis_entries, local_entries, wrong = asyncio.run(_cache_entries(cluster, by_key))
    return Figures(len(outcomes), len(failed), mismatches, redis_entries, local_entries, wrong, failed[:5])


async def _cache_entries(cluster: Cluster, by_key: dict[str, Golden]) -> tuple[int, int, int]:
    """(Redis entries, local sqlite entries, entries whose text differs from their golden or with an unknown key)."""
    wrong = 0
    sync = redis.Redis.from_url(cluster.redis_url)
    try:
        names = [n.decode() for n in sync.scan_iter(match="steadytext:r:*", count=1000)]
    finally:
        sync.close()
    keys = [n.removeprefix("steadytext:r:") for n in names]
    wrong += sum(1 for k in keys if k not in by_key)
    scratch = SqliteBackend(cluster.workdir / "check-scratch.sqlite3")
    backend = RedisBackend(cluster.redis_url, local=scratch)
    try:
        for key in keys:
            entry = await backend.get(key)
            if key in by_key and (entry is None or entry.result.text != by_key[key].text):
                wrong += 1
    finally:
        await backend.aclose()
    local = 0
    for replica in cluster.replicas:
        path = cluster.workdir / f"{replica.name}-cache" / CACHE_FILENAME
        if not path.exists():
            continue
        sqlite = SqliteBackend(path)
        try:
            for key, golden in by_key.items():
                entry = await sqlite.get(key)
                if entry is not None:
                    local += 1
                    wrong += entry.result.text != golden.text
        finally:
            await sqlite.aclose()
    return len(keys), local, wrong
