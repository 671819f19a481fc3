"""Batched decoding: aggregate tok/s and latency with batching on vs off, side by side in one run.

Prints one JSON line per figure. Ratios are what matter; absolute times on a shared machine are noise.

    python benchmarks/bench_batching.py            # full run (--tokens 64 --rounds 3)
    python benchmarks/bench_batching.py --quick    # bounded form used by the test suite

Figures:
- batching_concurrency: for 1, 2, 4, 8, 16 concurrent requests, aggregate tok/s and per-request p50/p99 latency
  with batching on (``max_batch=8``) and off (``max_batch=1``), same workers and threads, rounds interleaved;
  ``identical`` says every text matched between the two (target ratio at 8 concurrent >= 1.5).
- batching_shapes: at 8 concurrent, each worker/thread shape with batching on and off (the scheduling table in
  docs/guide/batching.md).
- batching_single_vs_raw: one request vs raw llama-cpp-python (``Llama.create_completion``, its default settings,
  best thread count), interleaved (target ratio >= 0.95).
- batching_event_loop_lag: p99 lag of a 1 ms ticker during 16 concurrent requests, batching on vs off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import loop_lag, run_raw

import steadytext_async as st

PROMPT = "Once upon a time, in a quiet village,"


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def burst(client: st.AsyncSteadyText, tokens: int, concurrent: int) -> tuple[float, list[float], list[str]]:
    """``concurrent`` requests at once: aggregate tok/s, each request's latency, the texts."""

    async def one(i: int) -> tuple[float, str, int]:
        t = time.perf_counter()
        r = await client.generate(f"{PROMPT} ({i})", max_new_tokens=tokens)
        return time.perf_counter() - t, r.text, r.usage.completion_tokens

    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(concurrent)))
    elapsed = time.perf_counter() - t0
    return sum(n for _, _, n in out) / elapsed, [lat for lat, _, _ in out], [text for _, text, _ in out]


def client(workers: int, threads: int, max_batch: int) -> st.AsyncSteadyText:
    return st.AsyncSteadyText(workers=workers, threads=threads, max_batch=max_batch, cache_disabled=True)


async def concurrency_table(
    on: st.AsyncSteadyText, off: st.AsyncSteadyText, tokens: int, rounds: int, levels: list[int]
) -> None:
    for c in levels:
        rates: dict[str, list[float]] = {"on": [], "off": []}
        lats: dict[str, list[float]] = {"on": [], "off": []}
        texts: dict[str, list[str]] = {}
        for _ in range(rounds):
            for name, cl in (("on", on), ("off", off)):
                rate, lat, text = await burst(cl, tokens, c)
                rates[name].append(rate)
                lats[name] += lat
                texts[name] = text
        on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
        emit(
            "batching_concurrency",
            concurrent=c,
            on_tok_s=round(on_rate, 1),
            off_tok_s=round(off_rate, 1),
            ratio=round(on_rate / off_rate, 3),
            on_p50_s=round(pct(lats["on"], 0.5), 3),
            on_p99_s=round(pct(lats["on"], 0.99), 3),
            off_p50_s=round(pct(lats["off"], 0.5), 3),
            off_p99_s=round(pct(lats["off"], 0.99), 3),
            identical=texts["on"] == texts["off"],
        )


async def shapes_table(cores: int, tokens: int, rounds: int, concurrent: int) -> None:
    shapes = sorted({(cores, cores), (1, cores)} | ({(cores, 1)} if cores > 1 else set()))
    for workers, threads in shapes:
        rates: dict[int, list[float]] = {8: [], 1: []}
        async with client(workers, threads, 8) as on, client(workers, threads, 1) as off:
            await on.preload()
            await off.preload()
            for _ in range(rounds):
                for mb, cl in ((8, on), (1, off)):
                    rates[mb].append((await burst(cl, tokens, concurrent))[0])
        emit(
            "batching_shapes",
            workers=workers,
            threads=threads,
            concurrent=concurrent,
            on_tok_s=round(statistics.median(rates[8]), 1),
            off_tok_s=round(statistics.median(rates[1]), 1),
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="bounded run for CI")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per request (default 64; quick 16)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per figure, median kept (default 3; quick 1)")
    args = ap.parse_args()
    tokens = args.tokens or (16 if args.quick else 64)
    rounds = args.rounds or (1 if args.quick else 3)
    levels = [1, 2, 8] if args.quick else [1, 2, 4, 8, 16]
    cores = st.Settings.from_env().threads
    async with client(cores, cores, 8) as on, client(cores, cores, 1) as off:
        spec = await on.preload()
        await off.preload()
        assert spec.path is not None
        probe = await on.generate(PROMPT, max_new_tokens=1)
        emit(
            "setup",
            cores=cores,
            tokens=tokens,
            rounds=rounds,
            max_batch=probe.fingerprint.max_batch,
            kernel=probe.fingerprint.kernel,
        )
        await concurrency_table(on, off, tokens, rounds, levels)

        raw: list[float] = []
        sdk: list[float] = []
        for _ in range(rounds):
            raw.append(max(max(run_raw(spec, n, tokens, 1)[0]) for n in sorted({1, cores})))
            sdk.append((await burst(on, tokens, 1))[0])
        emit(
            "batching_single_vs_raw",
            sdk_tok_s=round(statistics.median(sdk), 1),
            raw_best_tok_s=round(statistics.median(raw), 1),
            ratio=round(statistics.median(sdk) / statistics.median(raw), 3),
        )

        lag_on = await loop_lag(on, tokens, 16)
        lag_off = await loop_lag(off, tokens, 16)
        emit(
            "batching_event_loop_lag",
            on_p99_ms=round(pct(lag_on, 0.99) * 1000, 3),
            off_p99_ms=round(pct(lag_off, 0.99) * 1000, 3),
        )
    if not args.quick:
        await shapes_table(cores, tokens, rounds, 8)


if __name__ == "__main__":
    asyncio.run(main())
