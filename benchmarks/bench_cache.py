"""Result-cache benchmark: hit latency through ``agenerate``, miss overhead (cache on vs off), 64-way hit throughput.

Prints one JSON line per figure. Uses a temporary cache directory unless ``--cache-dir`` is given, so the user's
cache is never touched. Example::

    .venv/bin/python benchmarks/bench_cache.py --max-new-tokens 4 --hits 2000 --misses 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


def emit(figure: str, value: float | None, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_hits(args: argparse.Namespace) -> None:
    import steadytext_async as st

    prompt = "Benchmark: the cached prompt"
    first = await st.agenerate(prompt, max_new_tokens=args.max_new_tokens)
    again = await st.agenerate(prompt, max_new_tokens=args.max_new_tokens)
    cached = bool(getattr(getattr(again, "result", None), "cached", False))
    if not cached:
        emit("hit_latency_p50_ms", None, "ms", error="second identical call was not a cache hit")
        return
    assert str(first) == str(again)
    samples = []
    for _ in range(args.hits):
        t = time.perf_counter()
        await st.agenerate(prompt, max_new_tokens=args.max_new_tokens)
        samples.append(time.perf_counter() - t)
    emit("hit_latency_p50_ms", percentile(samples, 0.50) * 1e3, "ms", n=len(samples), api="agenerate")
    emit("hit_latency_p99_ms", percentile(samples, 0.99) * 1e3, "ms", n=len(samples), api="agenerate")

    per_task = max(1, args.hits // args.concurrency)

    async def worker() -> None:
        for _ in range(per_task):
            await st.agenerate(prompt, max_new_tokens=args.max_new_tokens)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - t
    emit(
        "hit_throughput_concurrent",
        args.concurrency * per_task / elapsed,
        "hits/s",
        concurrency=args.concurrency,
        n=args.concurrency * per_task,
    )
    await bench_stream_hits(args)
    await st.aclose()


async def bench_stream_hits(args: argparse.Namespace) -> None:
    """A 32-token generation replayed from the cache: streamed (``agenerate_iter``) vs whole (``agenerate``)."""
    import steadytext_async as st

    prompt, tokens = "Benchmark: the streamed cached prompt", 32
    whole = await st.agenerate(prompt, max_new_tokens=tokens)
    streamed = "".join([str(piece) async for piece in st.agenerate_iter(prompt, max_new_tokens=tokens)])
    assert streamed == str(whole), "a streamed hit must replay the same text"
    samples: dict[str, list[float]] = {"stream": [], "whole": []}
    for _ in range(max(50, args.hits // 4)):
        t = time.perf_counter()
        async for _piece in st.agenerate_iter(prompt, max_new_tokens=tokens):
            pass
        samples["stream"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await st.agenerate(prompt, max_new_tokens=tokens)
        samples["whole"].append(time.perf_counter() - t)
    for api, values in samples.items():
        emit(f"{api}_hit_32_tokens_p50_ms", percentile(values, 0.5) * 1e3, "ms", n=len(values), pieces=tokens)
        emit(f"{api}_hit_32_tokens_p99_ms", percentile(values, 0.99) * 1e3, "ms", n=len(values), pieces=tokens)
    ratio = percentile(samples["stream"], 0.5) / percentile(samples["whole"], 0.5)
    emit("stream_hit_vs_whole_hit_p50", ratio, "ratio", target_stream_p50_ms=0.3)


async def bench_miss_overhead(args: argparse.Namespace, cache_dir: Path) -> None:
    """Same prompts, fresh cache each pass: every call with the cache on is a miss plus a write-behind."""
    from steadytext_async import AsyncSteadyText

    timings: dict[str, list[float]] = {"off": [], "on": []}
    for rnd in range(args.rounds):
        prompts = [f"Miss benchmark round {rnd} prompt {i}:" for i in range(args.misses)]
        for mode in ("off", "on") if rnd % 2 == 0 else ("on", "off"):
            client = AsyncSteadyText(cache_disabled=(mode == "off"), cache_dir=cache_dir / f"miss-{rnd}-{mode}")
            try:
                await client.generate(f"warm-up {rnd} {mode}", max_new_tokens=args.max_new_tokens)
                for prompt in prompts:
                    t = time.perf_counter()
                    await client.generate(prompt, max_new_tokens=args.max_new_tokens)
                    timings[mode].append(time.perf_counter() - t)
            finally:
                await client.aclose()
    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    emit("miss_latency_cache_off_p50_ms", off * 1e3, "ms", n=len(timings["off"]))
    emit("miss_latency_cache_on_p50_ms", on * 1e3, "ms", n=len(timings["on"]))
    emit("miss_overhead_ratio", on / off, "ratio", max_new_tokens=args.max_new_tokens)


def synthetic_stream(tokens: int, tag: str) -> list[Any]:
    """A stored-looking stream without a model: ``tokens`` chunks ``"{tag}{i} "`` and their final result."""
    from steadytext_async._models import Chunk, Fingerprint, GenerationResult, sha256_text

    values: dict[str, Any] = {
        "package_version": "0",
        "provider": "local",
        "model": "m",
        "model_sha256": "a" * 64,
        "prompt": "p",
        "max_new_tokens": tokens,
        "eos_string": "[EOS]",
        "temperature": 0.0,
        "seed": 42,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "logprobs": False,
    }
    chunks = [Chunk(text=f"{tag}{i} ", token_ids=[i]) for i in range(tokens)]
    text = "".join(c.text for c in chunks)
    values["output_sha256"] = sha256_text(text)  # a cache refuses an entry whose text does not match it
    fp = Fingerprint(**{k: v for k, v in values.items() if k in Fingerprint.model_fields})
    return [*chunks, GenerationResult(text=text, finish_reason="length", provider="local", model="m", fingerprint=fp)]


async def bench_result_cache_alone(args: argparse.Namespace, cache_dir: Path) -> None:
    """The cache machinery without a model: front-hit cost and the cost a miss adds around ``produce()``."""
    from steadytext_async._cache import ResultCache, SqliteBackend, StreamItem

    out: list[StreamItem] = synthetic_stream(args.max_new_tokens, "w")

    async def produce() -> AsyncIterator[StreamItem]:
        for item in out:
            yield item

    cache = ResultCache(SqliteBackend(cache_dir / "alone" / "results.sqlite3"))
    async for _ in cache.stream("hot", produce):
        pass
    samples = []
    for _ in range(args.hits):
        t = time.perf_counter()
        async for _ in cache.stream("hot", produce):
            pass
        samples.append(time.perf_counter() - t)
    emit("result_cache_front_hit_p50_us", percentile(samples, 0.5) * 1e6, "us", n=len(samples))

    n = max(50, args.hits // 20)
    direct, cached = [], []
    for i in range(n):
        t = time.perf_counter()
        async for _ in produce():
            pass
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        async for _ in cache.stream(f"miss-{i}", produce):
            pass
        cached.append(time.perf_counter() - t)
    added = statistics.median(cached) - statistics.median(direct)
    emit("result_cache_miss_added_p50_us", added * 1e6, "us", n=n, note="backend lookup + flight, write is behind")
    await cache.aclose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--hits", type=int, default=2000, help="hit samples")
    p.add_argument("--misses", type=int, default=6, help="miss samples per mode and round")
    p.add_argument("--rounds", type=int, default=2, help="alternating on/off rounds for the miss overhead")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--skip-model", action="store_true", help="only the model-free ResultCache figures")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        os.environ["STEADYTEXT_CACHE_DIR"] = str(cache_dir / "api")  # the default client reads it on first use
        os.environ.pop("STEADYTEXT_DISABLE_CACHE", None)
        await bench_result_cache_alone(args, cache_dir)
        if not args.skip_model:
            await bench_hits(args)
            await bench_miss_overhead(args, cache_dir)


if __name__ == "__main__":
    asyncio.run(main())
