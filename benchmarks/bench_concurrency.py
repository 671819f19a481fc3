"""The SDK against raw llama-cpp-python and llama.cpp's own ``llama-server`` at 1, 2, 4, 8 and 16 concurrent
requests, side by side in one run.

The weak reference is what a plain llama-cpp-python service does with concurrent requests: one ``llama_cpp.Llama``
(all cores) answering them one after another (``python -m llama_cpp.server`` also serialises on one model). Its
``c`` concurrent figures come from ``c`` requests run back to back in a fresh process: request ``k`` finishes after
the first ``k`` requests' time. The strong reference is ``llama-server`` built from the llama.cpp the engine runs
(``scripts/build_llama_server.sh``; skipped with a message when absent), started per level with ``c`` parallel
slots of 2,048 cells (continuous batching), the same threads, greedy, prompt cache off. The SDK runs with its
default settings (result cache off, batching verdict settled before measuring) and the same prompts and token
counts; rounds are interleaved. Prints one JSON line per concurrency level (``concurrency_vs_raw``,
``concurrency_vs_llama_server``: aggregate tok/s, p50/p99 latency, the per-round ratios' median and spread) and
``distinct_outputs``: how many different texts each prompt got across all levels and rounds, per implementation.

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
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import llama_server
from peers.chat_prompt import prompt_tokens

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
        llm.reset()  # no prompt-prefix reuse between requests: every request evaluates its whole prompt, as ours do
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


def raw_serial(path: str, threads: str, tokens: int, ids: list[list[int]]) -> tuple[int, list[tuple[float, int]]]:
    """(threads chosen, [(seconds, tokens)] per request) from one fresh raw process, fed the prompts' token ids."""
    out = subprocess.run(
        [sys.executable, "-c", RAW, path, threads, str(tokens), json.dumps(ids)],
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
    rate, lat, _ = await sdk_texts(client, tokens, c)
    return rate, lat


async def sdk_texts(client: Any, tokens: int, c: int) -> tuple[float, list[float], list[str]]:
    async def one(prompt: str) -> tuple[float, int, str]:
        t = time.perf_counter()
        r = await client.generate(prompt, max_new_tokens=tokens)
        return time.perf_counter() - t, r.usage.completion_tokens, r.text

    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(p) for p in prompts(c)))
    return sum(k for _, k, _ in out) / (time.perf_counter() - t0), [s for s, _, _ in out], [t for _, _, t in out]


async def settle_batching(client: Any, rounds: int = 60) -> None:
    """Concurrent warm-up requests until every worker has its batching verdict and its wide context: a worker serves
    unbatched at first (and, without a cached verdict, tests while it decodes), which would otherwise be measured as
    the SDK's speed."""
    pool = client._local.pool
    for i in range(rounds):
        workers = [w for w in pool._workers if w.alive]
        if workers and not any(w.info.selftest_pending or w.info.widening for w in workers):
            return
        await asyncio.gather(*(client.generate(f"Warm-up {i}.{j}", max_new_tokens=16) for j in range(4)))
    print("bench_concurrency: batching verdict still pending after the warm-up", file=sys.stderr)


async def server_level(url: str, tokens: int, ids: list[list[int]]) -> tuple[float, list[float], list[str]]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=900) as http:
        t0 = time.perf_counter()
        out = await asyncio.gather(*(llama_server.complete(http, p, tokens) for p in ids))
        wall = time.perf_counter() - t0
    return sum(k for _, _, k in out) / wall, [s for s, _, _ in out], [t for _, t, _ in out]


def spread(values: list[float]) -> list[float]:
    return [round(min(values), 3), round(max(values), 3)]


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
    peer = llama_server.binary()
    if peer is None:
        print(f"bench_concurrency: skipping the llama-server peer: {llama_server.MISSING}", file=sys.stderr)
        emit("llama_server_skipped", reason=llama_server.MISSING)
    names = ["sdk", "raw"] + (["llama_server"] if peer is not None else [])
    rates: dict[str, dict[int, list[float]]] = {n: {c: [] for c in levels} for n in names}
    lats: dict[str, dict[int, list[float]]] = {n: {c: [] for c in levels} for n in names}
    texts: dict[str, dict[str, set[str]]] = {"sdk": {}, "llama_server": {}}
    async with st.AsyncSteadyText(cache_disabled=True) as client:
        spec = await client.preload()
        assert spec.path is not None
        model = spec.path
        await settle_batching(client)
        probe = await client.generate(prompts(1)[0], max_new_tokens=8)  # warm-up, as the raw side gets
        # The peers get the token ids the SDK evaluates (its chat template applied), so all do the same work.
        ids = prompt_tokens(model, prompts(max(levels)))
        if probe.usage.prompt_tokens != len(ids[0]):
            raise SystemExit(f"peer prompt has {len(ids[0])} tokens, the SDK's {probe.usage.prompt_tokens}")
        fp = probe.fingerprint.model_dump()
        emit(
            "setup",
            cores=cores,
            tokens=args.tokens,
            rounds=args.rounds,
            sdk={k: fp.get(k) for k in ("n_threads", "max_batch", "kernel") if k in fp},
            prompt_tokens=len(ids[0]),
            llama_server=str(peer) if peer is not None else None,
        )
        raw_threads: list[int] = []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                threads = ",".join(str(n) for n in sorted({1, cores}))
                chosen, runs = await asyncio.to_thread(raw_serial, model, threads, args.tokens, ids)
                raw_threads.append(chosen)
                for c in levels:
                    rate, lat = raw_level(runs, c)
                    rates["raw"][c].append(rate)
                    lats["raw"][c] += lat
                    order = ["sdk", "llama_server"] if r % 2 == 0 else ["llama_server", "sdk"]
                    for name in order:
                        if name == "sdk":
                            rate, lat, outs = await sdk_texts(client, args.tokens, c)
                        elif peer is not None:
                            log = Path(tmp) / f"llama-server-{c}.log"
                            with llama_server.running(model, slots=c, threads=cores, log=log) as url:
                                await server_level(url, 2, ids[:1])  # warm-up
                                rate, lat, outs = await server_level(url, args.tokens, ids[:c])
                        else:
                            continue
                        rates[name][c].append(rate)
                        lats[name][c] += lat
                        for prompt, text in zip(prompts(c), outs, strict=True):
                            texts[name].setdefault(prompt, set()).add(text)
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
        if peer is not None:
            ratios = [a / b for a, b in zip(rates["sdk"][c], rates["llama_server"][c], strict=True)]
            emit(
                "concurrency_vs_llama_server",
                concurrent=c,
                sdk_tok_s=round(sdk, 2),
                llama_server_tok_s=round(statistics.median(rates["llama_server"][c]), 2),
                ratio=round(statistics.median(ratios), 3),
                ratio_spread=spread(ratios),
                sdk_p50_s=round(pct(lats["sdk"][c], 0.5), 3),
                sdk_p99_s=round(pct(lats["sdk"][c], 0.99), 3),
                llama_server_p50_s=round(pct(lats["llama_server"][c], 0.5), 3),
                llama_server_p99_s=round(pct(lats["llama_server"][c], 0.99), 3),
                rounds=len(ratios),
            )
    for name, per_prompt in texts.items():
        if per_prompt:
            counts = [len(v) for v in per_prompt.values()]
            emit("distinct_outputs", impl=name, prompts=len(counts), max_per_prompt=max(counts),
                 prompts_with_more_than_one=sum(1 for n in counts if n > 1))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
