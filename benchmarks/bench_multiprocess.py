"""Multi-process deployments against one process, side by side in one run (the engine issue's target).

Every configuration generates the same total number of tokens from unique prompts with the result cache off,
started together after every process has loaded its model:

- ``one_process``: one process, one client, ``P × C`` concurrent ``agenerate`` (the reference);
- ``two_clients``: one process, two ``AsyncSteadyText`` clients, ``C`` concurrent each;
- ``processes_P``: ``P`` processes (module API), ``C`` concurrent each.

Prints one JSON line per figure: aggregate tok/s and the ratio to ``one_process`` (target >= 0.9). Absolute figures
on a shared machine are noise; the ratios are measured back to back.

    python benchmarks/bench_multiprocess.py            # 2 and 4 processes x 4 concurrent, 64 tokens each
    python benchmarks/bench_multiprocess.py --quick    # bounded form used by the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

CHILD = "--child"


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


async def _child_main(clients: int, concurrent: int, tokens: int, offset: int) -> None:
    import steadytext_async as st

    owned = [st.AsyncSteadyText() for _ in range(clients)]  # none: the module API
    for c in owned:
        await c.preload()
    if not owned:
        await st.apreload_models()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    t0 = time.time()

    async def one(i: int) -> int:
        prompt = f"Item {offset + i}: a short story about the number {offset + i}."
        if owned:
            r = await owned[i % len(owned)].generate(prompt, max_new_tokens=tokens)
            return r.usage.completion_tokens
        text = await st.agenerate(prompt, max_new_tokens=tokens)
        return len(text.result.token_ids)

    n = concurrent * max(1, clients)
    counts = await asyncio.gather(*(one(i) for i in range(n)))
    t1 = time.time()
    print(json.dumps({"start": t0, "end": t1, "tokens": sum(counts)}), flush=True)
    for c in owned:
        await c.aclose()


def _run(procs: int, clients: int, concurrent: int, tokens: int) -> dict[str, float]:
    env = {**os.environ, "STEADYTEXT_DISABLE_CACHE": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, __file__, CHILD, str(clients), str(concurrent), str(tokens), str(1000 * k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(procs)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"child failed to start: {line!r}")
    for child in children:  # go
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=900)
        results.append(json.loads(out.strip().splitlines()[-1]))
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    total = sum(r["tokens"] for r in results)
    return {"tok_s": total / (end - start), "tokens": total, "seconds": end - start}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        clients, concurrent, tokens, offset = (int(a) for a in sys.argv[2:6])
        asyncio.run(_child_main(clients, concurrent, tokens, offset))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--concurrent", type=int, default=4)
    args = ap.parse_args()
    tokens = 8 if args.quick else args.tokens
    c = 2 if args.quick else args.concurrent
    counts = [2] if args.quick else [2, 4]
    for p in counts:
        ref = _run(1, 0, p * c, tokens)
        emit("one_process", processes=1, concurrent=p * c, **ref)
        if p == 2:
            two = _run(1, 2, c, tokens)
            emit("two_clients", concurrent_each=c, ratio=two["tok_s"] / ref["tok_s"], **two)
        multi = _run(p, 0, c, tokens)
        emit(f"processes_{p}", processes=p, concurrent_each=c, ratio=multi["tok_s"] / ref["tok_s"], **multi)


if __name__ == "__main__":
    main()
