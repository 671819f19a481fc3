"""The SDK against raw llama-cpp-python at 1, 2, 4, 8 and 16 concurrent requests, side by side in one run.

The reference is what a plain llama-cpp-python service does with concurrent requests: one ``llama_cpp.Llama`` (all
cores) answering them one after another (``python -m llama_cpp.server`` also serialises on one model). Its ``c``
concurrent figures come from ``c`` requests run back to back in a fresh process: request ``k`` finishes after the
first ``k`` requests' time. The SDK runs with its default settings (result cache off) and the same prompts and
token counts; rounds are interleaved. Prints one JSON line per concurrency level (``concurrency_vs_raw``):
aggregate tok/s and p50/p99 request latency for both.

    python benchmarks/bench_concurrency.py            # 1..16 concurrent, 64 tokens, 2 rounds
    python benchmarks/bench_concurrency.py --quick    # bounded form used by the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

PROMPT = "Once upon a time, in a quiet village,"

RAW = textwrap.dedent(
    """
    import ctypes, json, sys, time
    import llama_cpp
    cb = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    path, tokens, prompts = sys.argv[1], int(sys.argv[3]), json.loads(sys.argv[4])
    best = None
    for threads in (int(x) for x in sys.argv[2].split(",")):  # keep the faster thread count (as bench_core does)
        llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        llm.create_completion("Warm up", max_tokens=2, temperature=0.0)
        t = time.perf_counter()
        llm.create_completion(prompts[0], max_tokens=6, temperature=0.0)
        took = time.perf_counter() - t
        if best is None or took < best[0]:
            best = (took, threads)
        llm.close()
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_threads=best[1], n_threads_batch=best[1],
                          verbose=False)
    out = [best[1]]
    for prompt in prompts:
        t = time.perf_counter()
        r = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0)
        out.append([time.perf_counter() - t, r["usage"]["completion_tokens"]])
    print(json.dumps(out), flush=True)
    """
)


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def prompts(n: int) -> list[str]:
    return [f"{PROMPT} ({i})" for i in range(n)]


def raw_serial(path: str, threads: str, tokens: int, n: int) -> tuple[int, list[tuple[float, int]]]:
    """(threads chosen, [(seconds, tokens)] per request) from one fresh raw process."""
    out = subprocess.run(
        [sys.executable, "-c", RAW, path, threads, str(tokens), json.dumps(prompts(n))],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    chosen, *runs = json.loads(out.stdout.strip().splitlines()[-1])
    return int(chosen), [(float(s), int(k)) for s, k in runs]


def raw_level(runs: list[tuple[float, int]], c: int) -> tuple[float, list[float]]:
    """Aggregate tok/s and latencies when ``c`` requests arrive together and are answered in turn."""
    finish, t = [], 0.0
    for seconds, _ in runs[:c]:
        t += seconds
        finish.append(t)
    return sum(k for _, k in runs[:c]) / t, finish


async def sdk_level(client: Any, tokens: int, c: int) -> tuple[float, list[float]]:
    async def one(prompt: str) -> tuple[float, int]:
        t = time.perf_counter()
        r = await client.generate(prompt, max_new_tokens=tokens)
        return time.perf_counter() - t, r.usage.completion_tokens

    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(p) for p in prompts(c)))
    return sum(k for _, k in out) / (time.perf_counter() - t0), [s for s, _ in out]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="bounded run for CI")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levels", default="1,2,4,8,16")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.rounds, args.levels = 12, 1, "1,2,4"
    levels = [int(x) for x in args.levels.split(",")]

    import steadytext_async as st

    cores = st.Settings.from_env().threads
    rates: dict[str, dict[int, list[float]]] = {"sdk": {c: [] for c in levels}, "raw": {c: [] for c in levels}}
    lats: dict[str, dict[int, list[float]]] = {"sdk": {c: [] for c in levels}, "raw": {c: [] for c in levels}}
    async with st.AsyncSteadyText(cache_disabled=True) as client:
        spec = await client.preload()
        assert spec.path is not None
        probe = await client.generate(PROMPT, max_new_tokens=8)  # warm-up, as the raw side gets
        fp = probe.fingerprint.model_dump()
        emit(
            "setup",
            cores=cores,
            tokens=args.tokens,
            rounds=args.rounds,
            sdk={k: fp.get(k) for k in ("n_threads", "max_batch", "kernel") if k in fp},
        )
        raw_threads: list[int] = []
        for _ in range(args.rounds):
            threads = ",".join(str(n) for n in sorted({1, cores}))
            chosen, runs = await asyncio.to_thread(raw_serial, spec.path, threads, args.tokens, max(levels))
            raw_threads.append(chosen)
            for c in levels:
                rate, lat = raw_level(runs, c)
                rates["raw"][c].append(rate)
                lats["raw"][c] += lat
                rate, lat = await sdk_level(client, args.tokens, c)
                rates["sdk"][c].append(rate)
                lats["sdk"][c] += lat
    for c in levels:
        sdk, raw = statistics.median(rates["sdk"][c]), statistics.median(rates["raw"][c])
        emit(
            "concurrency_vs_raw",
            concurrent=c,
            sdk_tok_s=round(sdk, 2),
            raw_tok_s=round(raw, 2),
            ratio=round(sdk / raw, 3),
            sdk_p50_s=round(pct(lats["sdk"][c], 0.5), 3),
            sdk_p99_s=round(pct(lats["sdk"][c], 0.99), 3),
            raw_p50_s=round(pct(lats["raw"][c], 0.5), 3),
            raw_p99_s=round(pct(lats["raw"][c], 0.99), 3),
            raw_threads=raw_threads,
        )


if __name__ == "__main__":
    asyncio.run(main())
