"""Prometheus text for ``/metrics``: request counters kept by the app, pool and cache counters read at scrape time."""

from __future__ import annotations

import collections
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._env import replica_id
from .._models import GenerationResult
from .._version import __version__

__all__ = ["Metrics"]

WINDOW = 60.0  # seconds over which tokens/s is averaged


class _PoolCollector(Collector):
    def __init__(self, metrics: Metrics, stats: Callable[[], dict[str, Any]]) -> None:
        self.metrics = metrics
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats()
        yield GaugeMetricFamily("steadytext_workers", "Live local worker processes", value=s["workers_alive"])
        yield GaugeMetricFamily("steadytext_workers_max", "Configured worker processes", value=s["workers_max"])
        yield GaugeMetricFamily("steadytext_workers_busy", "Workers generating right now", value=s["workers_busy"])
        queued = max(0, self.metrics.in_flight_generations - s["workers_busy"])
        yield GaugeMetricFamily("steadytext_queue_depth", "Requests waiting for a worker", value=queued)
        yield CounterMetricFamily(
            "steadytext_worker_restarts", "Workers that died unexpectedly and were replaced", value=s["respawns"]
        )
        yield CounterMetricFamily("steadytext_generations", "Generations completed by workers", value=s["generations"])
        yield CounterMetricFamily(
            "steadytext_cache_lookup_hits", "Result cache hits (all callers)", value=s["cache_hits"]
        )
        yield CounterMetricFamily(
            "steadytext_cache_lookup_misses", "Result cache misses (all callers)", value=s["cache_misses"]
        )
        hits = CounterMetricFamily(
            "steadytext_cache_tier_hits",
            "Result cache hits by the tier that answered: process (front layer or a generation in this process), "
            "redis (the shared cache), local (this host's sqlite file)",
            labels=["tier"],
        )
        for tier in ("process", "redis", "local"):
            hits.add_metric([tier], s.get(f"hits_{tier}", 0))
        yield hits
        waits = CounterMetricFamily(
            "steadytext_singleflight_waits",
            "Requests that waited for an identical generation instead of starting one: in this process, or running "
            "in another process or replica (through Redis)",
            labels=["scope"],
        )
        for scope in ("process", "cluster"):
            waits.add_metric([scope], s.get(f"waits_{scope}", 0))
        yield waits
        prefix = s.get  # absent before the first local request
        yield CounterMetricFamily(
            "steadytext_prefix_reuse_hits", "Generations that restored a prompt prefix", value=prefix("prefix_hits", 0)
        )
        yield CounterMetricFamily(
            "steadytext_prefix_reused_tokens", "Prompt tokens restored, not evaluated", value=prefix("prefix_tokens", 0)
        )
        yield GaugeMetricFamily(
            "steadytext_prefix_cache_bytes", "Prompt-prefix state kept by workers", value=prefix("prefix_bytes", 0)
        )
        yield GaugeMetricFamily(
            "steadytext_tokens_per_second",
            f"Generated (non-cached) completion tokens per second over the last {WINDOW:.0f} s",
            value=self.metrics.tokens_per_second(),
        )


class Metrics:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "steadytext_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "steadytext_cache_hits", "Responses served from the result cache", registry=self.registry
        )
        self.tokens = Counter(
            "steadytext_completion_tokens", "Completion tokens returned (cached or not)", registry=self.registry
        )
        self.generated = Counter("steadytext_generated_tokens", "Completion tokens generated", registry=self.registry)
        self.in_flight = Gauge("steadytext_requests_in_flight", "Requests being answered", registry=self.registry)
        self.latency = Histogram(
            "steadytext_request_seconds", "Time to the full response", ["endpoint"], registry=self.registry
        )
        self.in_flight_generations = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        # results already counted, held weakly: a result lives while its requests are answered, not longer
        self._seen: weakref.WeakValueDictionary[int, GenerationResult] = weakref.WeakValueDictionary()
        self.replica = Info(
            "steadytext_replica", "This server: replica id (STEADYTEXT_REPLICA_ID) and version", registry=self.registry
        )
        self.replica.info({"replica": replica_id(), "version": __version__})
        self.registry.register(_PoolCollector(self, stats))

    def record_result(self, result: GenerationResult) -> None:
        """Count one answered generation. Requests that joined another's in-flight generation (single-flight) get
        that very result object: they count as cache hits, not as generated tokens."""
        count = result.usage.completion_tokens
        self.tokens.inc(count)
        if result.cached or id(result) in self._seen:
            self.cache_hits.inc()
            return
        self._seen[id(result)] = result  # a reused id belongs to a dead result, which has left the mapping
        self.record_generated(count)

    def record_generated(self, count: int) -> None:
        self.generated.inc(count)
        self._window.append((time.monotonic(), count))

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        while self._window and self._window[0][0] < now - WINDOW:
            self._window.popleft()
        return sum(c for _, c in self._window) / WINDOW

    def render(self) -> bytes:
        return generate_latest(self.registry)
