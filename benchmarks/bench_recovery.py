"""Worker recovery under load: seconds from SIGKILL of a decoding worker until the pool has a ready worker in its place,
with and without a warm spare (``spare_workers=1``), rounds interleaved.

Each round: a pool (default workers and threads, batching off so both settings decode alike) runs ``--concurrent``
requests; one worker is killed mid-decode; the clock stops when the pool again has as many live, ready workers as
before (without a spare the killed worker's retried request starts one; with a spare, the spare takes its place).
Also checks that every request returned the same text as in an undisturbed run. Prints ``recovery`` per setting
(median, min, max seconds) and ``recovery_ratio`` (spare / no spare).

    python benchmarks/bench_recovery.py            # 3 rounds
    python benchmarks/bench_recovery.py --quick    # 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
from typing import Any

import steadytext_async as st


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


async def one_round(spare: bool, concurrent: int, tokens: int, expected: list[str]) -> float:
    async with st.AsyncSteadyText(cache_disabled=True, max_batch=1, spare_workers=int(spare)) as client:
        await client.preload()
        pool = client._local.pool
        for _ in range(12000 if spare else 0):  # the spare loads in the background
            if pool.spare_pids():
                break
            await asyncio.sleep(0.05)
        before = len(client.worker_pids())
        load = [asyncio.create_task(client.generate(f"Item {i}:", max_new_tokens=tokens)) for i in range(concurrent)]
        busy: list[int] = []
        for _ in range(6000):  # kill a worker that is decoding (its request is retried, which needs a worker)
            busy = [w.pid for w in pool._workers if w.alive and w.busy]
            if busy:
                break
            await asyncio.sleep(0.01)
        victim = busy[0]
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        took = float("nan")
        for _ in range(60000):  # bounded: 5 minutes
            pids = client.worker_pids()
            if victim not in pids and len(pids) >= before:
                took = time.perf_counter() - t0
                break
            await asyncio.sleep(0.005)
        texts = [r.text for r in await asyncio.gather(*load)]
        if texts != expected:
            raise SystemExit("bench_recovery: a request's text changed after the worker was replaced")
        return took


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.tokens = 1, 96
    async with st.AsyncSteadyText(cache_disabled=True, max_batch=1) as ref:
        expected = [(await ref.generate(f"Item {i}:", max_new_tokens=args.tokens)).text for i in range(args.concurrent)]
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for spare in (False, True) if r % 2 == 0 else (True, False):
            times[spare].append(await one_round(spare, args.concurrent, args.tokens, expected))
    for spare, values in times.items():
        emit(
            "recovery",
            spare_workers=int(spare),
            median_s=round(statistics.median(values), 3),
            min_s=round(min(values), 3),
            max_s=round(max(values), 3),
            rounds=len(values),
            load=os.getloadavg()[0],
        )
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    emit("recovery_ratio", spare_vs_none=round(statistics.median(ratios), 3), spread=[min(ratios), max(ratios)])


if __name__ == "__main__":
    asyncio.run(main())
