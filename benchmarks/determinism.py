"""Determinism matrix: the same prompts give the same bytes in every way of running them.

A fixed prompt set, greedy (T=0) and seeded sampling (T=0.8, seed 7), is generated under each *cell* below and
compared with the reference cell (fresh process, default pool, async ``generate``, cache off, one at a time):

- repeats in one process, and a second fresh process;
- pool sizes 1, 2, 4 and thread budgets 1, 2 (each a fresh process configured through the environment);
- concurrency 1, 4, 16, and batching on/off (when the build has ``STEADYTEXT_MAX_BATCH``; "off" is one sequence
  per worker);
- streamed vs whole, sync vs async;
- cache miss vs hit (whole and streamed), and in-process vs through ``steadytext-async serve`` (when the build has
  it: a daemon on 127.0.0.1 reached through ``STEADYTEXT_DAEMON_URL``);
- multi-turn conversations over a system prompt longer than one prompt chunk, each turn resent with the history
  (the shape prefix reuse serves): turn by turn, both conversations at once, streamed, and with prefix reuse off
  (``STEADYTEXT_PREFIX_CACHE_MB=0``); compared with the reference process's turn-by-turn cell. A cell with reuse
  on where no prompt token was restored, or with reuse off where one was, fails: it would test nothing.

Prints a table (identical/different per cell) and one sha256 over all outputs; exits 1 if any cell differs.

    python benchmarks/determinism.py             # full matrix (~5-10 min on 2 busy cores)
    python benchmarks/determinism.py --reduced   # CI form: 2 prompts, 8 tokens, pool 4 left out
    python benchmarks/determinism.py --json      # also one JSON line per cell and a summary line
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

Input = str | list[dict[str, str]]  # a prompt, or a conversation (messages=)
PROMPTS: list[Input] = [
    "Once upon a time",
    [  # a message list with a system prompt and history (in the reduced CI form too)
        {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And the capital of Italy?"},
    ],
    "The three primary colours are",
    "def add(a, b):\n    ",
    "Résumé: a café in Zürich serves crème brûlée and",
    "Question: why is the sky blue? Give a careful, detailed answer that mentions Rayleigh scattering, the "
    "wavelength dependence of scattering, and why sunsets look red.\nAnswer:",
]
SAMPLING = [{"temperature": 0.0}, {"temperature": 0.8, "seed": 7}]
Outputs = dict[str, list[str]]

# A multi-turn conversation: the system prompt (about 1,100 tokens) is longer than one 512-token prompt chunk, so a
# later turn restores the kept prefix of an earlier one instead of evaluating it (when prefix reuse is on).
SYSTEM = "You are the help desk of the Northwind library. Follow the house rules below.\n" + "\n".join(
    f"Rule {i}: a reader may borrow at most {i % 7 + 2} books of shelf {chr(65 + i % 26)} for {i % 5 + 1} weeks, "
    f"renew them {i % 3} times, and pays {i % 4 + 1} cents a day when late."
    for i in range(1, 36)
)
TURNS = [
    "How many books of shelf C may I borrow?",
    "And how many times may I renew them?",
    "What do I pay if I return them three days late?",
]
MULTI_TURN = "multi-turn"  # the family of cells compared with the reference's turn-by-turn cell


def requests(n_prompts: int) -> list[tuple[Input, dict[str, Any]]]:
    return [(p, s) for p in PROMPTS[:n_prompts] for s in SAMPLING]


def given(p: Input) -> dict[str, Any]:
    """The input as keyword arguments: ``prompt=`` or ``messages=``."""
    return {"prompt": p} if isinstance(p, str) else {"messages": p}


# ----------------------------------------------------------------------------------------------- child side
async def _concurrent(client: Any, reqs: list[tuple[Input, dict[str, Any]]], c: int, tokens: int) -> list[str]:
    """``c`` requests in flight: the request list repeated to at least ``c`` items, every copy must match."""
    items = reqs * max(1, -(-c // len(reqs)))
    gate = asyncio.Semaphore(c)

    async def one(p: Input, s: dict[str, Any]) -> str:
        async with gate:
            return str((await client.generate(**given(p), max_new_tokens=tokens, **s)).text)

    out = await asyncio.gather(*(one(p, s) for p, s in items))
    n = len(reqs)
    return [out[i] if all(out[i + k * n] == out[i] for k in range(len(items) // n)) else "<copies differ>"
            for i in range(n)]  # fmt: skip


async def _stream(client: Any, reqs: list[tuple[Input, dict[str, Any]]], tokens: int) -> tuple[list[str], bool]:
    texts, cached = [], True
    for p, s in reqs:
        items = [x async for x in client.stream(**given(p), max_new_tokens=tokens, **s)]
        joined = "".join(getattr(x, "text", "") for x in items[:-1])
        final = items[-1]
        texts.append(joined if joined == final.text else "<stream pieces != final text>")
        cached = cached and bool(final.cached)
    return texts, cached


def _sync(reqs: list[tuple[Input, dict[str, Any]]], tokens: int) -> tuple[list[str], list[str]]:
    import steadytext_async as st

    with st.SteadyText(cache_disabled=True) as client:
        whole = [client.generate(**given(p), max_new_tokens=tokens, **s).text for p, s in reqs]
        streamed = []
        for p, s in reqs:
            items = list(client.stream(**given(p), max_new_tokens=tokens, **s))
            streamed.append("".join(getattr(x, "text", "") for x in items[:-1]))
    return whole, streamed


async def _conversation(client: Any, s: dict[str, Any], turns: int, tokens: int, stream: bool) -> tuple[list[str], int]:
    """One conversation, each turn sent with the whole history; its replies and the prompt tokens restored."""
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    replies, reused = [], 0
    for question in TURNS[:turns]:
        messages.append({"role": "user", "content": question})
        if stream:
            items = [x async for x in client.stream(messages=messages, max_new_tokens=tokens, **s)]
            result = items[-1]
            joined = "".join(getattr(x, "text", "") for x in items[:-1])
            text = joined if joined == result.text else "<stream pieces != final text>"
        else:
            result = await client.generate(messages=messages, max_new_tokens=tokens, **s)
            text = result.text
        replies.append(str(text))
        reused += result.usage.prompt_tokens_cached
        messages.append({"role": "assistant", "content": str(result.text)})
    return replies, reused


async def _multi_turn(client: Any, cell: str, turns: int, tokens: int) -> list[str]:
    """The conversations of ``cell`` (one per sampling), with a failure marker when reuse did not do what the
    process's setting says (restored tokens with reuse on, none with it off)."""
    stream = cell.endswith("streamed")
    if cell.endswith("concurrent"):
        done = await asyncio.gather(*(_conversation(client, s, turns, tokens, stream) for s in SAMPLING))
    else:
        done = [await _conversation(client, s, turns, tokens, stream) for s in SAMPLING]
    replies = [r for texts, _ in done for r in texts]
    reused = sum(n for _, n in done)
    reuse_on = os.environ.get("STEADYTEXT_PREFIX_CACHE_MB", "") != "0"
    if reuse_on != (reused > 0):
        return [f"<prefix reuse {'on' if reuse_on else 'off'} but {reused} prompt tokens restored>"]
    return replies


async def child(cells: list[str], n_prompts: int, tokens: int, cache_dir: str) -> Outputs:
    import steadytext_async as st

    reqs = requests(n_prompts)
    out: Outputs = {}
    async with st.AsyncSteadyText(cache_disabled=True) as client:
        for cell in cells:
            if cell.startswith("repeat"):
                out[cell] = [str((await client.generate(**given(p), max_new_tokens=tokens, **s)).text) for p, s in reqs]
            elif cell.startswith("concurrency"):
                out[cell] = await _concurrent(client, reqs, int(cell.split()[-1]), tokens)
            elif cell == "stream":
                out[cell] = (await _stream(client, reqs, tokens))[0]
            elif cell == "sync":
                out["sync whole"], out["sync stream"] = await asyncio.to_thread(_sync, reqs, tokens)
            elif cell.startswith(MULTI_TURN):
                out[cell] = await _multi_turn(client, cell, min(len(TURNS), max(2, n_prompts)), tokens)
    if "cache" in cells:
        async with st.AsyncSteadyText(cache_disabled=False, cache_dir=Path(cache_dir)) as cached:
            miss = [await cached.generate(**given(p), max_new_tokens=tokens, **s) for p, s in reqs]
            hit = [await cached.generate(**given(p), max_new_tokens=tokens, **s) for p, s in reqs]
            streamed, all_hits = await _stream(cached, reqs, tokens)
        out["cache miss"] = [r.text if not r.cached else "<miss was a hit>" for r in miss]
        out["cache hit"] = [r.text if r.cached else "<hit was not cached>" for r in hit]
        out["cache hit, streamed"] = streamed if all_hits else ["<streamed hit was not cached>"] * len(reqs)
    return out


# ---------------------------------------------------------------------------------------------- parent side
@dataclasses.dataclass
class Group:
    """One fresh process: its environment and the cells it runs (a cell name maps to the matrix row)."""

    label: str
    env: dict[str, str]
    cells: list[str]


def has_batching() -> bool:
    from steadytext_async._config import Settings

    return "max_batch" in {f.name for f in dataclasses.fields(Settings)}


def has_serve() -> bool:
    return importlib.util.find_spec("steadytext_async.serve") is not None


def plan(reduced: bool) -> list[Group]:
    """The reference process runs every in-process cell; each other group varies one setting in a fresh process."""
    base_cells = ["repeat 1", "repeat 2", "concurrency 4", "concurrency 16", "stream", "sync", "cache"]
    turns = [MULTI_TURN, f"{MULTI_TURN}, concurrent", f"{MULTI_TURN}, streamed"]
    groups = [
        Group("reference", {}, [*base_cells, *turns]),
        Group("fresh process, pool 2, threads 2", {"STEADYTEXT_WORKERS": "2", "STEADYTEXT_THREADS": "2"},
              ["repeat 1", "concurrency 4"]),
        Group("pool 1", {"STEADYTEXT_WORKERS": "1"}, ["concurrency 4"]),
        Group("threads 1", {"STEADYTEXT_THREADS": "1"}, ["concurrency 4"]),
    ]  # fmt: skip
    if not reduced:
        groups.insert(3, Group("pool 4", {"STEADYTEXT_WORKERS": "4"}, ["concurrency 4"]))
    if has_batching():
        groups.append(Group("batching off", {"STEADYTEXT_MAX_BATCH": "1"}, ["concurrency 16"]))
        groups.append(Group("batching on", {"STEADYTEXT_MAX_BATCH": "8"}, ["concurrency 16"]))
    groups.append(
        Group("prefix reuse off", {"STEADYTEXT_PREFIX_CACHE_MB": "0"}, [MULTI_TURN, f"{MULTI_TURN}, concurrent"])
    )
    return groups


def run_group(group: Group, n_prompts: int, tokens: int, tmp: Path, extra_env: dict[str, str]) -> Outputs:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYTEXT_")}
    env.update({"STEADYTEXT_DISABLE_CACHE": "1", **extra_env, **group.env})
    cache_dir = tmp / re.sub(r"\W+", "-", group.label)
    cmd = [sys.executable, __file__, "--child", json.dumps(group.cells), str(n_prompts), str(tokens), str(cache_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        return {"error": [f"<child failed: {tail}>"]}
    result: Outputs = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def start_serve(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """``steadytext-async serve --port 0`` on 127.0.0.1; returns the process and its URL (or None if it failed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYTEXT_")}
    env["STEADYTEXT_DISABLE_CACHE"] = "1"
    log = tmp / "serve.log"
    cmd = [sys.executable, "-m", "steadytext_async", "serve", "--host", "127.0.0.1", "--port", "0", "--daemon"]
    with log.open("wb") as sink:  # a file, not a pipe: nobody reads it while the matrix runs
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    return None


def served_requests(url: str) -> float:
    """``steadytext_requests_total`` summed over endpoints, from serve's /metrics (0 if unreadable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("steadytext_requests_total")
    )


def matrix(reduced: bool, n_prompts: int, tokens: int) -> tuple[list[dict[str, Any]], str, str]:
    with tempfile.TemporaryDirectory(prefix="determinism-") as tmp:
        results = [(g.label, run_group(g, n_prompts, tokens, Path(tmp), {})) for g in plan(reduced)]
        if has_serve():
            served = start_serve(Path(tmp))
            if served is None:
                results.append(("serve", {"through serve (daemon)": ["<serve did not start>"]}))
            else:
                proc, url = served
                try:
                    group = Group("serve", {}, ["repeat 1", "stream"])
                    got = run_group(group, n_prompts, tokens, Path(tmp), {"STEADYTEXT_DAEMON_URL": url})
                    if served_requests(url) == 0:  # the SDK fell back to in-process: not a serve cell at all
                        got = {k: ["<no request reached serve>"] for k in got}
                    results.append(("serve", {f"through serve (daemon), {k}": v for k, v in got.items()}))
                finally:
                    proc.terminate()
                    proc.wait(30)
    return compare(results)


def compare(results: list[tuple[str, Outputs]]) -> tuple[list[dict[str, Any]], str, str]:
    """Rows (one per cell, against the first group's ``repeat 1``, or its multi-turn cell for the multi-turn family),
    sha256 over all outputs, sha256 of the reference."""
    reference = results[0][1]["repeat 1"]
    conversation = results[0][1].get(MULTI_TURN)
    rows: list[dict[str, Any]] = []
    for label, outputs in results:
        for cell, texts in outputs.items():
            name = cell if label in ("reference", "serve") else f"{label}: {cell}"
            expected = conversation if cell.startswith(MULTI_TURN) else reference
            rows.append({"cell": name, "identical": texts == expected, "outputs": len(texts),
                         "sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]})  # fmt: skip
    everything = json.dumps([[label, sorted(o.items())] for label, o in results], ensure_ascii=False)
    reference_sha = hashlib.sha256(json.dumps(reference, ensure_ascii=False).encode()).hexdigest()
    return rows, hashlib.sha256(everything.encode()).hexdigest(), reference_sha


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reduced", action="store_true", help="the CI form")
    ap.add_argument("--json", action="store_true", help="also print JSON lines (benchmarks/run reads them)")
    ap.add_argument(
        "--prompts", type=int, default=None, help=f"prompts from the fixed set (default 2 reduced, {len(PROMPTS)})"
    )
    ap.add_argument("--tokens", type=int, default=None, help="max_new_tokens (default 8 reduced, 32)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        n_prompts, tokens, cache_dir = int(args.rest[0]), int(args.rest[1]), args.rest[2]
        print(json.dumps(asyncio.run(child(json.loads(args.child), n_prompts, tokens, cache_dir))), flush=True)
        return 0
    t0 = time.perf_counter()
    n_prompts = args.prompts or (2 if args.reduced else len(PROMPTS))
    tokens = args.tokens or (8 if args.reduced else 32)
    rows, digest, reference_sha = matrix(args.reduced, min(n_prompts, len(PROMPTS)), tokens)
    width = max(len(r["cell"]) for r in rows)
    print(f"{'cell':<{width}}  result     outputs")
    for r in rows:
        print(f"{r['cell']:<{width}}  {'identical' if r['identical'] else 'DIFFERENT'}  {r['outputs']}")
    same = sum(r["identical"] for r in rows)
    print(f"{same}/{len(rows)} cells identical; sha256 over all outputs: {digest}")
    notes = [] if has_batching() else ["batching on: no STEADYTEXT_MAX_BATCH setting in this build"]
    notes += [] if has_serve() else ["through serve: steadytext_async.serve is not in this build"]
    for note in notes:
        print(f"not covered: {note}")
    if args.json:
        for r in rows:
            print(json.dumps({"figure": "determinism_cell", **r}))
        print(json.dumps({"figure": "determinism_summary", "cells": len(rows), "identical_cells": same,
                          "sha256": digest, "reference_sha256": reference_sha, "reduced": args.reduced,
                          "prompts": n_prompts, "sampling": SAMPLING, "max_new_tokens": tokens,
                          "not_covered": notes, "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
