"""Benchmarks run in a bounded form so they cannot rot; their figures are printed, never asserted on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=ROOT,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print(out.stdout)  # the figures end up in the CI log
    return lines


def figures(lines: list[dict[str, object]]) -> set[str]:
    return {str(line["figure"]) for line in lines}


def test_bench_core_quick() -> None:
    got = figures(run("bench_core.py", "--quick"))
    assert got >= {
        "sdk_vs_raw_single",
        "sdk_vs_raw_two_concurrent",
        "sdk_sixteen_vs_two_concurrent",
        "event_loop_lag",
        "import_time",
    }


def test_bench_cache_bounded() -> None:
    got = figures(run("bench_cache.py", "--hits", "300", "--misses", "2", "--rounds", "1", "--concurrency", "16"))
    assert {"hit_throughput_concurrent", "miss_overhead_ratio"} <= got


def test_bench_remote_bounded() -> None:
    got = figures(run("bench_remote.py", "--requests", "30", "--rounds", "1", "--concurrency", "8"))
    assert any(name.startswith("router_generate") for name in got)


@pytest.mark.timeout(600)
def test_bench_structured_bounded() -> None:
    lines = run("bench_structured.py", "--tokens", "16", "--repeat", "1")
    assert {"compile_ms", "constrained_decode", "constrained_vs_unconstrained"} <= figures(lines)
    assert all(line["deterministic"] for line in lines if line["figure"] == "constrained_decode")


def test_bench_cache_redis_quick() -> None:
    from _redis_server import redis_binary

    redis_binary()  # skips (or fails under CI=true) without redis-server
    got = figures(run("bench_cache_redis.py", "--quick"))
    assert {
        "redis_vs_sqlite_hit_p50",
        "redis_vs_sqlite_throughput",
        "redis_vs_sqlite_cross_process_hit_p50",
        "redis_cross_process_first_read_ms",
    } <= got


@pytest.mark.timeout(900)
def test_bench_server_quick() -> None:
    lines = run("bench_server.py", "--quick")
    assert {"server_unique", "server_repeated", "server_ratio", "identical_after_different_prompts"} <= figures(lines)
    ours = [x for x in lines if x["figure"] == "identical_after_different_prompts" and x["server"] == "steadytext"]
    assert ours and ours[0]["identical"] is True


@pytest.mark.timeout(600)
def test_bench_batching_quick() -> None:
    lines = run("bench_batching.py", "--quick")
    assert {"batching_concurrency", "batching_single_vs_raw", "batching_event_loop_lag"} <= figures(lines)
    rows = [line for line in lines if line["figure"] == "batching_concurrency"]
    assert [row["concurrent"] for row in rows] == [1, 2, 8]
    assert all(row["identical"] for row in rows)  # batching never changes the text
