"""The one table of what ``benchmarks/run`` executes: every benchmark with its quick and full arguments, and peers.

A ``bench_*.py`` found in ``benchmarks/`` but not listed here is recorded as skipped (with the reason) rather than
run with guessed arguments; a listed script that is not in this checkout is recorded as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    name: str  # results key
    script: str  # path relative to benchmarks/
    quick: tuple[str, ...]
    full: tuple[str, ...]
    timeout_quick: int  # seconds
    timeout_full: int
    compares: str  # one line for RESULTS.md
    venv: str | None = None  # a peer venv (see peers.VENVS) instead of the project's interpreter
    requires: tuple[str, ...] = ()  # executables that must be on PATH
    lands_with: str | None = None  # where a script that is not here yet comes from
    env: dict[str, str] = field(default_factory=dict)


BENCHMARKS: tuple[Entry, ...] = (  # in order of importance: --budget cuts from the end
    Entry(
        "bench_batching",
        "bench_batching.py",
        ("--quick",),
        (),
        420,
        1200,
        "batched decode on vs off at 1, 2, 4, 8, 16 concurrent: tok/s, p50/p99 latency, identical text",
        lands_with="branch batching (issue 12)",
    ),
    Entry(
        "bench_concurrency",
        "bench_concurrency.py",
        ("--quick",),
        ("--tokens", "96", "--rounds", "3"),
        420,
        900,
        "SDK vs raw llama-cpp-python (one Llama, requests in turn) and llama-server (N slots) at 1-16 concurrent",
    ),
    Entry(
        "determinism",
        "determinism.py",
        ("--reduced", "--json"),
        ("--json", "--prompts", "4", "--tokens", "16"),
        420,
        1200,
        "determinism matrix: identical bytes across repeats, processes, pools, threads, concurrency, APIs, cache",
    ),
    Entry(
        "bench_cache_hits",
        "bench_cache_hits.py",
        ("--quick",),
        ("--keys", "30", "--hits", "1000"),
        300,
        600,
        "cache hit latency distributions through the client: sqlite vs Redis, generate vs stream, front vs backend",
        requires=("redis-server",),
    ),
    Entry(
        "bench_remote",
        "bench_remote.py",
        ("--requests", "30", "--rounds", "1", "--concurrency", "8"),
        ("--requests", "200", "--rounds", "2"),
        300,
        600,
        "remote router overhead over raw httpx on a loopback server (non-streamed and SSE)",
    ),
    Entry(
        "bench_multiprocess",
        "bench_multiprocess.py",
        ("--quick",),
        ("--tokens", "32"),
        420,
        900,
        "2 and 4 processes vs one process (same total work): aggregate tok/s",
    ),
    Entry(
        "bench_core",
        "bench_core.py",
        ("--quick",),
        (),
        420,
        900,
        "SDK vs raw llama-cpp-python decode tok/s (1 and 2 concurrent), 16 vs 2 concurrent, loop lag, import time",
    ),
    Entry(
        "bench_server",
        "bench_server.py",
        ("--quick",),
        (),
        420,
        900,
        "steadytext-async serve vs python -m llama_cpp.server: throughput, p50/p99, bytes after other prompts",
        lands_with="branch serve",
    ),
    Entry(
        "bench_cache_redis",
        "bench_cache_redis.py",
        ("--quick",),
        (),
        300,
        600,
        "sqlite vs Redis backend: hit p50/p99, 64-way hit throughput, cross-process first read",
        requires=("redis-server",),
    ),
    Entry(
        "bench_cache",
        "bench_cache.py",
        ("--hits", "300", "--misses", "2", "--rounds", "1", "--concurrency", "16"),
        ("--hits", "1000"),
        300,
        600,
        "cache hit latency p50/p99, miss overhead (cache on vs off), concurrent hit throughput",
    ),
    Entry(
        "bench_recovery",
        "bench_recovery.py",
        ("--quick",),
        (),
        420,
        900,
        "worker replacement after SIGKILL under load: warm spare (spare_workers=1) vs none, seconds",
    ),
    Entry(
        "bench_structured",
        "bench_structured.py",
        ("--tokens", "16", "--repeat", "1"),
        ("--tokens", "32", "--repeat", "1"),
        420,
        900,
        "llguidance vs outlines-core: constrained vs unconstrained tok/s, mask cost, compile time",
    ),
    Entry(
        "bench_prefix",
        "bench_prefix.py",
        ("--quick",),
        (),
        420,
        1800,
        "prefix reuse on vs off in a 10-turn chat (~2,000-token system): TTFT and conversation time, identical "
        "bytes; llama-cpp-python's own prefix reuse and its byte changes",
    ),
    Entry(
        "bench_tools",
        "bench_tools.py",
        ("--rounds", "3"),
        (),
        300,
        900,
        "tool-call decode vs unconstrained decode of the same length: tok/s ratio",
    ),
)

PEERS: tuple[Entry, ...] = (
    Entry(
        "peer_steadytext_pypi",
        "peers/steadytext_pypi.py",
        ("--impl", "original", "--repeats", "20"),
        ("--impl", "original", "--repeats", "200"),
        900,
        1200,
        "original steadytext (PyPI) on the same GGUF: first call, cached repeat latency, outputs",
        venv="steadytext",
        env={"STEADYTEXT_DISABLE_DAEMON": "1", "HF_HUB_OFFLINE": "1"},
    ),
    Entry(
        "peer_steadytext_async",
        "peers/steadytext_pypi.py",
        ("--impl", "ours", "--repeats", "20"),
        ("--impl", "ours", "--repeats", "200"),
        300,
        600,
        "steadytext-async with the same script and prompts (the side-by-side half of the row above)",
    ),
    Entry(
        "peer_remote_clients",
        "peers/remote_clients.py",
        ("--requests", "30"),
        ("--requests", "300"),
        900,
        900,
        "raw httpx vs openai-python vs LiteLLM per-request overhead, loopback server, one process",
        venv="litellm",
    ),
)

# What --budget keeps first: concurrency, determinism and the peers, then the rest.
RUN_ORDER: tuple[Entry, ...] = (*BENCHMARKS[:3], *PEERS, *BENCHMARKS[3:])
