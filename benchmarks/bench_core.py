"""Core benchmark: the SDK against raw llama-cpp-python, side by side in one run.

Prints one JSON line per figure. Ratios are what matter; absolute times on a shared machine are noise.

    python benchmarks/bench_core.py            # full run (~2 min)
    python benchmarks/bench_core.py --quick    # bounded form used by the test suite

Figures:
- sdk_vs_raw_single: decode tok/s of one ``agenerate`` vs raw ``llama_cpp.Llama`` (same model, prompt, tokens),
  raw at its best thread count (target ratio >= 0.9; >= 0.95 on a quiet machine).
- sdk_vs_raw_two_concurrent: two concurrent ``agenerate`` vs two raw 1-thread processes side by side, aggregate tok/s.
- sdk_sixteen_vs_two_concurrent: 16 concurrent vs 2 concurrent aggregate tok/s (target >= 1.0).
- event_loop_lag: p50/p99 lag of a 1 ms ticker while 16 generations run (target p99 <= 5 ms).
- import_time: ``python -c "import steadytext_async"``, and import + first ``agenerate`` attribute + building one
  request (``first_use_over_bare_ms``, target <= 150 ms), next to bare interpreter start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import steadytext_async as st

PROMPT = "Write a long story about a quiet village by the sea."

RAW = textwrap.dedent(
    """
    import ctypes, json, sys, time
    import llama_cpp
    cb = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    path, prompt, chat = sys.argv[1], sys.argv[5], sys.argv[6] == "chat"
    threads, tokens, rounds = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    print("ready", flush=True)
    sys.stdin.readline()
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        if chat:  # the GGUF's chat template, as the SDK renders a prompt for a chat model
            out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0.0)
        else:
            out = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0)
        rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - t))
    print(json.dumps(rates), flush=True)
    """
)


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def start_raw(path: str, threads: int, tokens: int, rounds: int, fmt: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW, path, str(threads), str(tokens), str(rounds), PROMPT, fmt],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def run_raw(spec: st.ModelSpec, threads: int, tokens: int, rounds: int, copies: int = 1) -> list[list[float]]:
    """Start ``copies`` raw processes, release them together, return each one's tok/s per round."""
    assert spec.path is not None
    procs = [start_raw(spec.path, threads, tokens, rounds, spec.prompt_format) for _ in range(copies)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        assert p.stdout is not None
        out.append(json.loads(p.stdout.readline()))
        p.wait()
    return out


async def sdk_rate(client: st.AsyncSteadyText, tokens: int, concurrent: int) -> float:
    t = time.perf_counter()
    results = await asyncio.gather(
        *(client.generate(f"{PROMPT} ({i})", max_new_tokens=tokens) for i in range(concurrent))
    )
    elapsed = time.perf_counter() - t
    assert all(r.usage.completion_tokens > 0 for r in results)  # an instruct model may end its answer early
    return sum(r.usage.completion_tokens for r in results) / elapsed


async def loop_lag(client: st.AsyncSteadyText, tokens: int, concurrent: int) -> list[float]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(client.generate(f"{PROMPT} {i}", max_new_tokens=tokens) for i in range(concurrent)))
    stop.set()
    await tick
    return lags


def import_times(n: int) -> tuple[float, float, float]:
    def best(code: str) -> float:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append(time.perf_counter() - t)
        return statistics.median(samples)

    bare = best("pass")
    first_use = best(  # import + first `agenerate` attribute + building one request (issue 14: <= 150 ms over bare)
        "import steadytext_async; steadytext_async.agenerate; "
        "from steadytext_async._validate import build_request; build_request('hi', max_new_tokens=4)"
    )
    return best("import steadytext_async"), bare, first_use


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="bounded run for CI")
    args = ap.parse_args()
    tokens = 32 if args.quick else 128
    rounds = 1 if args.quick else 3
    cores = st.Settings.from_env().threads
    async with st.AsyncSteadyText(workers=cores, threads=cores, cache_disabled=True) as client:
        spec = await client.preload()
        assert spec.path is not None
        emit("setup", model_sha256=spec.sha256, cores=cores, tokens=tokens, rounds=rounds, pid=os.getpid())

        # 1. single request vs raw at each thread count, interleaved round by round
        raw_best: list[float] = []
        sdk_single: list[float] = []
        for _ in range(rounds):
            per_threads = [max(run_raw(spec, n, tokens, 1)[0]) for n in sorted({1, cores})]
            raw_best.append(max(per_threads))
            sdk_single.append(await sdk_rate(client, tokens, 1))
        raw1, sdk1 = statistics.median(raw_best), statistics.median(sdk_single)
        emit("sdk_vs_raw_single", sdk_tok_s=round(sdk1, 1), raw_best_tok_s=round(raw1, 1), ratio=round(sdk1 / raw1, 3))

        # 2. two concurrent vs two raw 1-thread processes side by side
        raw_pair: list[float] = []
        sdk_pair: list[float] = []
        for _ in range(rounds):
            pair = run_raw(spec, max(1, cores // 2), tokens, 1, copies=2)
            raw_pair.append(sum(r[0] for r in pair))
            sdk_pair.append(await sdk_rate(client, tokens, 2))
        raw2, sdk2 = statistics.median(raw_pair), statistics.median(sdk_pair)
        emit(
            "sdk_vs_raw_two_concurrent",
            sdk_tok_s=round(sdk2, 1),
            raw_aggregate_tok_s=round(raw2, 1),
            ratio=round(sdk2 / raw2, 3),
        )

        # 3. sixteen concurrent vs two concurrent
        sdk16 = statistics.median([await sdk_rate(client, tokens, 16) for _ in range(rounds)])
        emit(
            "sdk_sixteen_vs_two_concurrent",
            sixteen_tok_s=round(sdk16, 1),
            two_tok_s=round(sdk2, 1),
            ratio=round(sdk16 / sdk2, 3),
        )

        # 4. event-loop lag while 16 generations run
        lags = sorted(await loop_lag(client, tokens // 2, 16))
        p50 = lags[len(lags) // 2]
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        emit("event_loop_lag", p50_ms=round(p50 * 1000, 3), p99_ms=round(p99 * 1000, 3), samples=len(lags))

    # 5. import time
    imp, bare, first_use = import_times(3 if args.quick else 9)
    emit(
        "import_time",
        import_ms=round(imp * 1000, 1),
        bare_python_ms=round(bare * 1000, 1),
        import_only_ms=round((imp - bare) * 1000, 1),
        import_and_first_use_ms=round(first_use * 1000, 1),  # the lazy facade defers pydantic etc. to here
        first_use_over_bare_ms=round((first_use - bare) * 1000, 1),
    )


if __name__ == "__main__":
    asyncio.run(main())
