"""Result cache, sqlite vs Redis side by side in one run (no model): backend hit latency p50/p99, hit throughput at
64 concurrent, cross-process hit latency (the first read from a process that did not generate), front-layer hit.

Starts its own redis-server on 127.0.0.1 (no persistence) unless ``--redis-url`` is given; uses a temporary
directory for sqlite. Prints one JSON line per figure; ratios are Redis over sqlite. Example::

    .venv/bin/python benchmarks/bench_cache_redis.py            # full
    .venv/bin/python benchmarks/bench_cache_redis.py --quick    # bounded (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_cache import synthetic_stream

ROOT = Path(__file__).resolve().parent.parent


def emit(figure: str, value: float | None, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install -y redis-server) and no --redis-url given")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--save", ""]
    args += ["--appendonly", "no", "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lfu"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def make_backend(kind: str, url: str, directory: Path) -> Any:
    from steadytext_async._cache import SqliteBackend
    from steadytext_async._cache.redis import RedisBackend

    local = SqliteBackend(directory / "results.sqlite3", max_entries=10**6, max_bytes=1 << 34)
    return local if kind == "sqlite" else RedisBackend(url, local=local, prefix="bench:")


async def fill(kind: str, url: str, directory: Path, keys: int, tokens: int) -> None:
    """Generate ``keys`` entries through a ResultCache (and wait for the writes)."""
    from steadytext_async._cache import ResultCache

    cache = ResultCache(make_backend(kind, url, directory))
    for i in range(keys):
        out = synthetic_stream(tokens, f"k{i}-")

        async def produce(out: list[Any] = out) -> AsyncIterator[Any]:
            for item in out:
                yield item

        async for _ in cache.stream(f"key{i}", produce):
            pass
    await cache.aclose()


async def nothing() -> AsyncIterator[Any]:
    raise AssertionError("a hit was expected")
    yield


async def backend_hits(kind: str, url: str, directory: Path, args: argparse.Namespace) -> dict[str, float]:
    """Hits served by the backend (front layer off), sequential and 64 concurrent; the front-layer hit."""
    from steadytext_async._cache import ResultCache

    cache = ResultCache(make_backend(kind, url, directory), front_entries=0)
    async for _ in cache.stream("key0", nothing):  # connect/open
        pass
    samples = []
    for i in range(args.hits):
        t = time.perf_counter()
        async for _ in cache.stream(f"key{i % args.keys}", nothing):
            pass
        samples.append(time.perf_counter() - t)
    per_task = max(1, args.hits // args.concurrency)

    async def worker(w: int) -> None:
        for i in range(per_task):
            async for _ in cache.stream(f"key{(w * per_task + i) % args.keys}", nothing):
                pass

    t = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    throughput = args.concurrency * per_task / (time.perf_counter() - t)
    await cache.aclose()

    front = ResultCache(make_backend(kind, url, directory))
    async for _ in front.stream("key0", nothing):
        pass
    front_samples = []
    for _ in range(args.hits):
        t = time.perf_counter()
        async for _ in front.stream("key0", nothing):
            pass
        front_samples.append(time.perf_counter() - t)
    await front.aclose()
    return {
        "p50": percentile(samples, 0.5),
        "p99": percentile(samples, 0.99),
        "throughput": throughput,
        "front_p50": percentile(front_samples, 0.5),
    }


READER = r"""
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[5])
from bench_cache_redis import make_backend, nothing
from steadytext_async._cache import ResultCache

async def main():
    kind, url, directory, keys = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    cache = ResultCache(make_backend(kind, url, directory))
    firsts = []
    for i in range(keys):
        t = time.perf_counter()
        async for _ in cache.stream(f"key{i}", nothing):
            pass
        firsts.append(time.perf_counter() - t)
    await cache.aclose()
    print(json.dumps(firsts))

asyncio.run(main())
"""


def cross_process(kind: str, url: str, directory: Path, keys: int) -> list[float]:
    """First reads, one per key, by a process that generated none of them (the first includes connecting)."""
    out = subprocess.run(
        [sys.executable, "-c", READER, kind, url, str(directory), str(keys), str(ROOT / "benchmarks")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [float(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


async def run(args: argparse.Namespace, url: str, tmp: Path) -> None:
    results: dict[str, dict[str, float]] = {}
    for kind in ("sqlite", "redis"):
        directory = tmp / kind
        await fill(kind, url, directory, args.keys, args.tokens)
        results[kind] = await backend_hits(kind, url, directory, args)
        firsts = cross_process(kind, url, directory, min(args.keys, args.cross))
        results[kind]["cross_first"] = firsts[0]
        results[kind]["cross_p50"] = percentile(firsts[1:], 0.5)
    for kind, r in results.items():
        emit(f"{kind}_backend_hit_p50_us", r["p50"] * 1e6, "us", n=args.hits, tokens=args.tokens)
        emit(f"{kind}_backend_hit_p99_us", r["p99"] * 1e6, "us", n=args.hits)
        emit(f"{kind}_hit_throughput_{args.concurrency}", r["throughput"], "hits/s", concurrency=args.concurrency)
        emit(f"{kind}_cross_process_first_read_ms", r["cross_first"] * 1e3, "ms", note="includes connect/open")
        emit(f"{kind}_cross_process_hit_p50_us", r["cross_p50"] * 1e6, "us", n=min(args.keys, args.cross) - 1)
        emit(f"{kind}_front_hit_p50_us", r["front_p50"] * 1e6, "us", note="in-process layer, no backend I/O")
    s, r = results["sqlite"], results["redis"]
    emit("redis_vs_sqlite_hit_p50", r["p50"] / s["p50"], "ratio")
    emit("redis_vs_sqlite_hit_p99", r["p99"] / s["p99"], "ratio")
    emit("redis_vs_sqlite_throughput", r["throughput"] / s["throughput"], "ratio")
    emit("redis_vs_sqlite_cross_process_hit_p50", r["cross_p50"] / s["cross_p50"], "ratio")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="bounded run for CI")
    p.add_argument("--hits", type=int, default=3000)
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--cross", type=int, default=100, help="keys read by the other process")
    p.add_argument("--tokens", type=int, default=32, help="chunks per stored stream")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    args = p.parse_args()
    if args.quick:
        args.hits, args.keys, args.cross = 300, 50, 20
    with tempfile.TemporaryDirectory(prefix="bench-cache-redis-") as tmp:
        if args.redis_url:
            asyncio.run(run(args, args.redis_url, Path(tmp)))
        else:
            with redis_server(Path(tmp)) as url:
                asyncio.run(run(args, url, Path(tmp)))


if __name__ == "__main__":
    main()
