"""Cache-hit latency distributions through the client: sqlite vs Redis, whole (``generate``) vs streamed.

For each backend one process generates ``--keys`` results (the embedded model, cache on) and exits; a fresh process
then reads them back: the first read of each key is a **backend** hit (sqlite file or Redis; half of the keys through
``generate``, half through ``stream``), and ``--hits`` repeats of one key are **front** hits (the in-process layer).
Starts its own redis-server on 127.0.0.1 (no persistence). Prints one ``cache_hit_latency`` line per (backend, api,
layer) with p50/p90/p99 and 21 quantiles (0 %, 5 %, ..., 100 %) in µs for the distribution plot.

    python benchmarks/bench_cache_hits.py            # 60 keys, 2000 front hits
    python benchmarks/bench_cache_hits.py --quick    # bounded form used by the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cache_redis import redis_server

TOKENS = 16


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def percentile_us(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)


def quantiles(samples: list[float]) -> list[float]:
    return [percentile_us(samples, q / 20) for q in range(21)]


def prompt(i: int) -> str:
    return f"Cache benchmark prompt number {i}:"


async def child(mode: str, keys: int, hits: int) -> None:
    import steadytext_async as st

    async with st.AsyncSteadyText() as client:  # cache dir / URL from the environment set by the parent
        if mode == "fill":
            for i in range(keys + 1):
                await client.generate(prompt(i), max_new_tokens=TOKENS)
            return
        await client.generate(prompt(keys), max_new_tokens=TOKENS)  # warm-up: connect, open, first-use costs
        samples: dict[str, list[float]] = {
            "generate/backend": [],
            "stream/backend": [],
            "generate/front": [],
            "stream/front": [],
        }
        for i in range(keys):
            api = "generate" if i % 2 == 0 else "stream"
            t = time.perf_counter()
            if api == "generate":
                result = await client.generate(prompt(i), max_new_tokens=TOKENS)
            else:
                result = [x async for x in client.stream(prompt(i), max_new_tokens=TOKENS)][-1]  # type: ignore[assignment]
            samples[f"{api}/backend"].append(time.perf_counter() - t)
            assert result.cached, f"key {i} was not a cache hit"
        for api in ("generate", "stream"):
            for _ in range(hits):
                t = time.perf_counter()
                if api == "generate":
                    await client.generate(prompt(0), max_new_tokens=TOKENS)
                else:
                    async for _ in client.stream(prompt(0), max_new_tokens=TOKENS):
                        pass
                samples[f"{api}/front"].append(time.perf_counter() - t)
        print(json.dumps(samples), flush=True)


def run_child(mode: str, env: dict[str, str], keys: int, hits: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--keys", str(keys), "--hits", str(hits)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed: {out.stderr.strip()[-600:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) if mode == "read" else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="bounded run for CI")
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--hits", type=int, default=2000)
    ap.add_argument("--child", choices=("fill", "read"), default=None)
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.keys, args.hits))
        return
    if args.quick:
        args.keys, args.hits = 8, 200
    base = {k: v for k, v in os.environ.items() if not k.startswith("STEADYTEXT_CACHE")}
    base.pop("STEADYTEXT_DISABLE_CACHE", None)
    with tempfile.TemporaryDirectory(prefix="bench-cache-hits-") as tmp, redis_server(Path(tmp)) as url:
        for backend in ("sqlite", "redis"):
            env = {**base, "STEADYTEXT_CACHE_DIR": str(Path(tmp) / backend)}
            if backend == "redis":
                env["STEADYTEXT_CACHE_URL"] = url
            run_child("fill", env, args.keys, args.hits)
            samples = run_child("read", env, args.keys, args.hits)
            for key, values in samples.items():
                api, layer = key.split("/")
                q = quantiles(values)
                emit(
                    "cache_hit_latency",
                    backend=backend,
                    api=api,
                    layer=layer,
                    n=len(values),
                    p50_us=q[10],
                    p90_us=q[18],
                    p99_us=percentile_us(values, 0.99),
                    quantiles_us=q,
                    tokens=TOKENS,
                )


if __name__ == "__main__":
    main()
