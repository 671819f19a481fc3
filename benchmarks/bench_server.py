"""``steadytext-async serve`` against llama-cpp-python's own server and llama.cpp's ``llama-server``, same GGUF, same
threads, loopback only.

Run: ``python benchmarks/bench_server.py [--quick] [--threads 2] [--requests 32] [--tokens 32] [--concurrency 4]``.
All servers are started, then requests go to one server at a time in alternating
rounds (an idle server costs no CPU), so load drift on a shared host hits every server alike. Prints one JSON line
per figure:

- ``server_unique`` / ``server_repeated``: throughput (requests/s, completion tokens/s) and p50/p99 latency of
  non-streamed ``/v1/completions`` at ``--concurrency``, greedy, for unique prompts and for prompts drawn from a set
  of 4. Ours runs as shipped (result cache on), and again with the cache off (``steadytext_nocache``).
- ``server_ratio``: ours / llama-cpp-python for throughput and p50 (cache on and off).
- ``llama-server`` (built by ``scripts/build_llama_server.sh`` from the llama.cpp the engine runs; skipped with a
  message when absent) runs with ``--concurrency`` parallel slots (continuous batching) and its prompt cache off.
- ``identical_after_different_prompts``: one prompt sent after each of several different earlier prompts (some share
  a prefix with it); ``identical`` says whether every answer had the same bytes. llama-cpp-python reuses the
  previous prompt's KV prefix, which changes how the prompt is split into batches. Ours is checked with the cache
  off, so every answer is really generated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers import llama_server as native  # noqa: E402
from peers.chat_prompt import prompt_texts  # noqa: E402

from steadytext_async._config import _default_cache_dir  # noqa: E402
from steadytext_async._registry import embedded_model  # noqa: E402

WARMUP = "Warm up"
TARGET = "The history of the city of Rome begins with"
EARLIER = [
    "Bananas are",
    "The history",
    "The history of the city of Athens begins with",
    "The history of the city of Rome",
    "The history of the city of Rome begins with the founding",
    "Write a list of three fruits:",
]
REPEATED = ["The weather today is", "My favourite book is", "In 1969, astronauts", "The recipe calls for"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the benchmark dies (a killed benchmark leaves no server behind)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@contextlib.contextmanager
def steadytext_server(tmp: Path, threads: int, cache: bool) -> Iterator[str]:
    cache_dir = tmp / f"cache-{time.monotonic_ns()}"
    # A fresh cache directory has no batching verdict: the workers would serve unbatched while their self-test runs,
    # and that would be measured as serve's speed. Start from the user's verdicts (their key names the model, build,
    # CPU and settings, so one that does not apply is tested again).
    verdicts = _default_cache_dir() / "batch-verdicts.json"
    if verdicts.exists():
        cache_dir.mkdir(parents=True)
        shutil.copyfile(verdicts, cache_dir / verdicts.name)
    env = {
        **os.environ,
        "STEADYTEXT_THREADS": str(threads),
        "STEADYTEXT_WORKERS": str(threads),
        "STEADYTEXT_CACHE_DIR": str(cache_dir),
        "STEADYTEXT_DISABLE_CACHE": "0" if cache else "1",
    }
    env.pop("STEADYTEXT_DAEMON_URL", None)
    log = tmp / "steadytext.log"
    cmd = [sys.executable, "-m", "steadytext_async", "serve", "--port", "0"]
    with _process(cmd, env, log) as proc:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"listening on (\S+)", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        url = m.group(1)
        _wait_ready(proc, url + "/health", log)
        yield url


@contextlib.contextmanager
def llama_server(tmp: Path, model: str, threads: int, n_ctx: int) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx)]
    cmd += ["--model_alias", "default"]
    url = f"http://127.0.0.1:{port}"
    with _process(cmd, dict(os.environ), tmp / "llama.log") as proc:
        _wait_ready(proc, url + "/v1/models", tmp / "llama.log")
        yield url


# llama-server keeps a prompt cache by default (a request then evaluates only the part its slot has not seen)
EXTRA: dict[str, dict[str, Any]] = {}
# The peers get each prompt as the text ours evaluates (the chat template applied), so all do the same work.
RENDERED: dict[str, str] = {}
PEER_URLS: set[str] = set()


async def _complete(client: httpx.AsyncClient, prompt: str, tokens: int) -> tuple[float, str, int]:
    url = str(client.base_url).rstrip("/")
    text = RENDERED.get(prompt, prompt) if url in PEER_URLS else prompt
    body = {"model": "default", "prompt": text, "max_tokens": tokens, "temperature": 0.0, "seed": 42}
    body.update(EXTRA.get(url, {}))
    t0 = time.perf_counter()
    response = await client.post("/v1/completions", json=body)
    response.raise_for_status()
    doc = response.json()
    return time.perf_counter() - t0, doc["choices"][0]["text"], int(doc["usage"]["completion_tokens"])


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for p in parts for x in p["latencies"])
    wall = sum(p["wall"] for p in parts)
    tokens = sum(p["tokens"] for p in parts)
    return {
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / wall, 3),
        "tok_per_s": round(tokens / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
    }


async def _workload(url: str, prompts: list[str], tokens: int, concurrency: int) -> dict[str, Any]:
    limiter = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(prompt: str) -> tuple[float, str, int]:
            async with limiter:
                return await _complete(client, prompt, tokens)

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in prompts))
        wall = time.perf_counter() - t0
    return {"latencies": [r[0] for r in results], "wall": wall, "tokens": sum(r[2] for r in results)}


async def _identity(url: str, tokens: int, earlier: list[str]) -> dict[str, Any]:
    answers = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for before in earlier:
            await _complete(client, before, tokens)
            answers.append((await _complete(client, TARGET, tokens))[1])
    return {"identical": len(set(answers)) == 1, "distinct_outputs": len(set(answers)), "trials": len(answers)}


def _emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="bounded form: 8 requests of 8 tokens, 3 identity trials")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    args = p.parse_args()
    if args.quick:
        args.requests, args.tokens, args.concurrency, args.rounds = 8, 8, 2, 2
    earlier = EARLIER[:3] if args.quick else EARLIER
    model = str(embedded_model().path)
    unique = [f"Request {i}: a short story about {w}" for i, w in enumerate(["cats", "ships", "rain", "maps"] * 64)]
    unique = unique[: args.requests]
    repeated = [REPEATED[i % len(REPEATED)] for i in range(args.requests)]
    run_id = time.time_ns()  # unique prompts stay unique across runs that share a cache directory
    unique = [f"[{run_id}] {u}" for u in unique]
    names = ["llama_cpp", "steadytext", "steadytext_nocache"]
    if native.binary() is None:
        print(f"bench_server: skipping the llama-server peer: {native.MISSING}", file=sys.stderr)
        _emit(figure="llama_server_skipped", reason=native.MISSING)
    else:
        names.append("llama_server")
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {(n, k): [] for n in names for k in ("unique", "repeated")}
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        urls = {
            "llama_cpp": stack.enter_context(llama_server(tmp, model, args.threads, 4096)),
            "steadytext": stack.enter_context(steadytext_server(tmp, args.threads, cache=True)),
            "steadytext_nocache": stack.enter_context(steadytext_server(tmp, args.threads, cache=False)),
        }
        if "llama_server" in names:
            url = stack.enter_context(
                native.running(model, slots=args.concurrency, threads=args.threads, log=tmp / "llama-server.log")
            )
            urls["llama_server"] = url
            EXTRA[url] = {"cache_prompt": False}
        PEER_URLS.update(urls[n] for n in ("llama_cpp", "llama_server") if n in urls)
        everything = [*unique, *repeated, *earlier, TARGET, WARMUP]
        RENDERED.update(zip(everything, prompt_texts(model, everything), strict=True))
        for url in urls.values():
            asyncio.run(_complete_warmup(url))
        # idle servers cost no CPU; rounds alternate between them so load drift on a shared host hits all alike
        for r in range(args.rounds):
            for kind, prompts in (("unique", unique), ("repeated", repeated)):
                part = prompts[r :: args.rounds]
                for name in names if r % 2 == 0 else names[::-1]:
                    samples[(name, kind)].append(
                        asyncio.run(_workload(urls[name], part, args.tokens, args.concurrency))
                    )
        for name in [n for n in ("llama_cpp", "llama_server", "steadytext_nocache") if n in urls]:
            result = asyncio.run(_identity(urls[name], args.tokens, earlier))
            _emit(figure="identical_after_different_prompts", server=name.removesuffix("_nocache"), **result)
    figures = {key: _merge(parts) for key, parts in samples.items()}
    for (name, kind), fig in figures.items():
        _emit(figure=f"server_{kind}", server=name, tokens=args.tokens, concurrency=args.concurrency, **fig)
    peers = [n for n in ("llama_cpp", "llama_server") if n in names]
    for ours, peer, kind in itertools.product(("steadytext", "steadytext_nocache"), peers, ("unique", "repeated")):
        a, b = figures[(ours, kind)], figures[(peer, kind)]
        _emit(
            figure="server_ratio",
            server=ours,
            peer=peer,
            workload=kind,
            throughput_ratio=round(a["tok_per_s"] / b["tok_per_s"], 3) if b["tok_per_s"] else None,
            p50_ratio=round(a["p50_ms"] / b["p50_ms"], 3),
            p99_ratio=round(a["p99_ms"] / b["p99_ms"], 3),
        )


async def _complete_warmup(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await _complete(client, WARMUP, 2)


if __name__ == "__main__":
    main()
