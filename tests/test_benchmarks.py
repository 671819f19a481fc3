"""Benchmarks run in a bounded form so they cannot rot; their figures are printed, never asserted on.

Two tiers: the fast tier runs a smoke of each benchmark (its own functions or its CLI at the smallest size, seconds
each); the slow tier (``-m slow``, which ``.ci/run`` runs after the fast tier) runs each script's ``--quick`` or
bounded form end to end, peers included.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

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


@pytest.mark.slow
def test_bench_core_quick() -> None:
    got = figures(run("bench_core.py", "--quick"))
    assert got >= {
        "sdk_vs_raw_single",
        "sdk_vs_raw_two_concurrent",
        "sdk_sixteen_vs_two_concurrent",
        "event_loop_lag",
        "import_time",
    }


@pytest.mark.slow
def test_bench_cache_bounded() -> None:
    got = figures(run("bench_cache.py", "--hits", "300", "--misses", "2", "--rounds", "1", "--concurrency", "16"))
    assert {"hit_throughput_concurrent", "miss_overhead_ratio"} <= got


def test_bench_remote_bounded() -> None:  # model-free and cheap: stays in the fast tier
    got = figures(run("bench_remote.py", "--requests", "30", "--rounds", "1", "--concurrency", "8"))
    assert any(name.startswith("router_generate") for name in got)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_structured_bounded() -> None:
    lines = run("bench_structured.py", "--tokens", "16", "--repeat", "1")
    assert {"compile_ms", "constrained_decode", "constrained_vs_unconstrained"} <= figures(lines)
    assert all(line["deterministic"] for line in lines if line["figure"] == "constrained_decode")


def test_bench_cache_redis_quick() -> None:  # model-free and cheap: stays in the fast tier
    from _redis_server import redis_binary

    redis_binary()  # skips (or fails under CI=true) without redis-server
    got = figures(run("bench_cache_redis.py", "--quick"))
    assert {
        "redis_vs_sqlite_hit_p50",
        "redis_vs_sqlite_throughput",
        "redis_vs_sqlite_cross_process_hit_p50",
        "redis_cross_process_first_read_ms",
    } <= got


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_server_quick() -> None:
    lines = run("bench_server.py", "--quick")
    assert {"server_unique", "server_repeated", "server_ratio", "identical_after_different_prompts"} <= figures(lines)
    ours = [x for x in lines if x["figure"] == "identical_after_different_prompts" and x["server"] == "steadytext"]
    assert ours and ours[0]["identical"] is True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_batching_quick() -> None:
    lines = run("bench_batching.py", "--quick")
    assert {"batching_concurrency", "batching_single_vs_raw", "batching_event_loop_lag"} <= figures(lines)
    rows = [line for line in lines if line["figure"] == "batching_concurrency"]
    assert [row["concurrent"] for row in rows] == [1, 2, 8]
    assert all(row["identical"] for row in rows)  # batching never changes the text


# ------------------------------------------------------------------------------------- benchmarks/run, determinism
RUNNER = ROOT / "benchmarks" / "_runner"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(RUNNER))
    import execute
    import main
    import table

    return main, execute, table


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_quick_writes_results_table_and_plots(tmp_path: Path) -> None:
    """``benchmarks/run --quick`` on a bounded selection: JSON, Markdown and PNG outputs exist and parse."""
    from _redis_server import redis_binary

    redis_binary()
    only = "bench_concurrency,bench_cache_hits,bench_remote"
    out = subprocess.run(
        [str(ROOT / "benchmarks" / "run"), "--quick", "--skip-peers", "--only", only, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "STEADYTEXT_BENCH_PYTHON": sys.executable},
    )
    print(out.stderr)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "quick"
    assert results["machine"]["cores_usable"] >= 1 and "llama-cpp-python" in results["machine"]["packages"]
    assert "AVX" in results["machine"]["llama_cpp_system_info"]  # llama.cpp's own build flags
    benches = results["benchmarks"]
    for name in only.split(","):
        assert benches[name]["status"] == "ok", benches[name]
    levels = [f["concurrent"] for f in benches["bench_concurrency"]["figures"] if f["figure"] == "concurrency_vs_raw"]
    assert levels == [1, 2, 4]
    hits = {(f["backend"], f["api"], f["layer"]) for f in benches["bench_cache_hits"]["figures"]}
    assert hits == {
        (b, a, la) for b in ("sqlite", "redis") for a in ("generate", "stream") for la in ("backend", "front")
    }
    assert benches["peer_steadytext_pypi"]["status"] == "not selected"  # --skip-peers is recorded, not dropped
    assert benches["bench_core"]["reason"].startswith("--only")
    rows = {row["source"] for row in results["headline"]}
    assert {"bench_concurrency", "bench_cache_hits", "bench_remote"} <= rows
    assert all(row["ratio"] is None or row["ratio"] > 0 for row in results["headline"])
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| comparison | ours | reference |" in md and "## Machine" in md
    from matplotlib.image import imread

    for png in ("concurrency.png", "cache_hits.png", "remote_overhead.png", "multiprocess.png"):
        assert f"plots/{png}" in md
        image = imread(tmp_path / "plots" / png)
        assert image.shape[0] > 300 and image.shape[1] > 600


def test_run_records_missing_failing_and_undeclared(runner: Any, tmp_path: Path) -> None:
    main, execute, table = runner
    missing = table.Entry("bench_later", "bench_later.py", ("--quick",), (), 10, 10, "x", lands_with="branch y")
    rec = execute.run_entry(missing, quick=True)
    assert rec["status"] == "missing" and "lands with branch y" in rec["reason"]
    broken = tmp_path / "bench_broken.py"
    broken.write_text("import sys\nprint('{\"figure\": \"partial\"}')\nsys.exit('it broke here')\n")
    rec = execute.run_entry(table.Entry("bench_broken", str(broken), (), (), 60, 60, "x"), quick=True)
    assert rec["status"] == "failed" and "exited 1" in rec["reason"] and "it broke here" in rec["reason"]
    assert rec["figures"] == [{"figure": "partial"}]  # what it printed before failing is kept
    needs = table.Entry("bench_core", "bench_core.py", (), (), 10, 10, "x", requires=("no-such-binary-here",))
    assert execute.run_entry(needs, quick=True)["status"] == "skipped"
    declared = {e.script for e in table.BENCHMARKS}
    assert {f"{stem}.py" for stem in main.discover()} <= declared  # every bench_*.py here has a table row
    with pytest.raises(SystemExit, match="unknown --only"):
        main.main(["--only", "bench_nope", "--out", str(tmp_path)])


def test_determinism_compare_flags_a_differing_cell() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import determinism
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    same = {"repeat 1": ["a", "b"], "stream": ["a", "b"]}
    rows, digest, ref = determinism.compare([("reference", same), ("pool 1", {"concurrency 4": ["a", "B"]})])
    assert [r["identical"] for r in rows] == [True, True, False]
    assert rows[-1]["cell"] == "pool 1: concurrency 4"
    again, digest2, ref2 = determinism.compare([("reference", same), ("pool 1", {"concurrency 4": ["a", "b"]})])
    assert all(r["identical"] for r in again) and ref2 == ref and digest2 != digest
    turns = {**same, "multi-turn": ["x", "y"]}  # the multi-turn family compares with the reference's conversation
    rows, _, _ = determinism.compare([("reference", turns), ("off", {"multi-turn": ["x", "y"], "stream": ["x", "y"]})])
    assert [r["identical"] for r in rows] == [True, True, True, True, False]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_determinism_matrix_reduced() -> None:
    """The CI form of the matrix: every cell identical (exit 0), one sha256 over all outputs."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "determinism.py"), "--reduced", "--json"],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    print(out.stdout)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    cells = [line for line in lines if line["figure"] == "determinism_cell"]
    summary = next(line for line in lines if line["figure"] == "determinism_summary")
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert summary["identical_cells"] == summary["cells"] == len(cells) >= 10
    assert {"concurrency 16", "sync stream", "cache hit, streamed", "pool 1: concurrency 4"} <= {
        c["cell"] for c in cells
    }
    # one output set per family: the prompt cells, and the multi-turn conversations (reuse on and off)
    turns = [c for c in cells if "multi-turn" in c["cell"]]
    assert {"multi-turn", "prefix reuse off: multi-turn"} <= {c["cell"] for c in turns}
    assert len({c["sha256"] for c in cells if c not in turns}) == 1 and len({c["sha256"] for c in turns}) == 1
    assert len(summary["sha256"]) == 64


def test_update_docs_replaces_only_the_results_block(runner: Any, tmp_path: Path) -> None:
    main, _, _ = runner
    page = tmp_path / "index.md"
    page.write_text("# x\n<!-- results:begin -->\nold table\n<!-- results:end -->\n![plot](p.png)\n")
    main.update_results_block(page, "| new | table |")
    assert page.read_text() == "# x\n<!-- results:begin -->\n| new | table |\n<!-- results:end -->\n![plot](p.png)\n"
    assert main.RESULTS_PAGE == ROOT / "docs" / "benchmarks" / "index.md"
    assert main.RESULTS_PAGE.read_text().count("<!-- results:begin -->") == 1  # the real page has the block


def test_headline_pairs_from_synthetic_figures(runner: Any) -> None:
    """Each known figure becomes a pair with ratio = ours / reference; a missing benchmark just adds no rows."""
    import report

    def rec(*figs: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "figures": list(figs)}

    results = {
        "benchmarks": {
            "bench_batching": rec(
                {"figure": "batching_concurrency", "concurrent": 8, "on_tok_s": 30.0, "off_tok_s": 20.0},
            ),
            "bench_server": rec(
                {"figure": "server_unique", "server": "steadytext", "tok_per_s": 12.0, "p99_ms": 900.0},
                {"figure": "server_unique", "server": "llama_cpp", "tok_per_s": 10.0, "p99_ms": 1800.0},
                {"figure": "identical_after_different_prompts", "server": "steadytext", "identical": True},
                {"figure": "identical_after_different_prompts", "server": "llama_cpp", "identical": False},
            ),
            "peer_steadytext_pypi": rec({"figure": "cached_repeat", "p50_us": 40.0, "p99_us": 400.0}),
            "peer_steadytext_async": rec({"figure": "cached_repeat", "p50_us": 20.0, "p99_us": 100.0}),
        }
    }
    rows = {row["comparison"]: row for row in report.headline(results)}
    assert rows["8 concurrent, batching on vs off"]["ratio"] == 1.5
    assert rows["serve, unique prompts, throughput"]["ratio"] == 1.2
    assert rows["serve, unique prompts, p99 latency"]["ratio"] == 0.5
    same = rows["same bytes after different earlier prompts"]
    assert (same["ours"], same["reference"]) == ("yes", "no")
    assert rows["cached repeat p50"]["ratio"] == 0.5 and rows["cached repeat p99"]["ratio"] == 0.25
    assert not any(r["source"] == "bench_core" for r in rows.values())


def test_run_entry_timeout_ends_what_the_benchmark_started(runner: Any, tmp_path: Path) -> None:
    """A benchmark that times out is killed with its children (a grandchild holding the pipes cannot hang the run)."""
    _, execute, table = runner
    script = tmp_path / "bench_hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    t0 = time.monotonic()
    rec = execute.run_entry(table.Entry("bench_hang", str(script), (), (), 3, 3, "x"), quick=True)
    assert time.monotonic() - t0 < 60
    assert rec["status"] == "timeout" and "timed out after 3 s" in rec["reason"]
    grandchild = int(rec["text"].split()[0])
    from conftest import alive

    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)


# ------------------------------------------------------------------------------------------ fast-tier smokes
@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import a benchmark script as a module (its functions, not its ``main``)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import importlib

    return importlib.import_module


async def test_bench_core_and_batching_smoke(bench: Any) -> None:
    """bench_core's and bench_batching's measuring functions on the shared default client, a few tokens each."""
    import steadytext_async as st

    core, batching = bench("bench_core"), bench("bench_batching")
    client = st.default_client()
    assert await core.sdk_rate(client, 4, 2) > 0
    assert all(lag >= -0.001 for lag in await core.loop_lag(client, 2, 2))
    rate, latencies, texts = await batching.burst(client, 4, 2)
    assert rate > 0 and len(latencies) == 2 and all(texts)
    assert batching.pct([3.0, 1.0, 2.0], 0.5) == 2.0


def test_bench_server_smoke(bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_server against our server alone (the llama.cpp peer runs in the slow tier): workload and identity."""
    import asyncio

    monkeypatch.setenv("STEADYTEXT_MAX_BATCH", "1")  # its fresh cache dir would cost a batching self-test (~16 CPU s)
    server = bench("bench_server")
    with server.steadytext_server(tmp_path, 1, cache=False) as url:
        part = asyncio.run(server._workload(url, ["Smoke one", "Smoke two"], 4, 2))
        identity = asyncio.run(server._identity(url, 4, server.EARLIER[:2]))
    merged = server._merge([part])
    assert merged["requests"] == 2 and merged["tok_per_s"] > 0 and merged["p50_ms"] <= merged["p99_ms"]
    assert identity == {"identical": True, "distinct_outputs": 1, "trials": 2}


def test_bench_cache_smoke() -> None:
    got = figures(run("bench_cache.py", "--skip-model", "--hits", "50", "--concurrency", "4"))
    assert got, "bench_cache printed no figures"


def test_determinism_plan_covers_every_way_of_running() -> None:
    """The matrix's plan (its cells run in the slow tier; each cell's behaviour is tested in-process by
    tests/test_determinism.py): a reference group with every in-process cell, then one setting varied per group."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import determinism
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    reduced, full = determinism.plan(True), determinism.plan(False)
    assert reduced[0].label == "reference" and reduced[0].env == {}
    assert {"repeat 1", "concurrency 16", "stream", "sync", "cache"} <= set(reduced[0].cells)
    assert all(g.env for g in reduced[1:])  # every other group changes exactly what its label says
    assert [g.label for g in full] == [*[g.label for g in reduced[:3]], "pool 4", *[g.label for g in reduced[3:]]]
    assert len(determinism.requests(2)) == 4  # two prompts, greedy and seeded
    # multi-turn conversations (prefix reuse on) in the reference process, and again with reuse off
    assert {"multi-turn", "multi-turn, concurrent", "multi-turn, streamed"} <= set(reduced[0].cells)
    assert reduced[-1].env == {"STEADYTEXT_PREFIX_CACHE_MB": "0"} and "multi-turn" in reduced[-1].cells


@pytest.mark.timeout(600)
def test_run_quick_smoke(tmp_path: Path) -> None:
    """``benchmarks/run`` end to end on one model-free benchmark: results.json and RESULTS.md are written."""
    out = subprocess.run(
        [str(ROOT / "benchmarks" / "run"), "--quick", "--skip-peers", "--only", "bench_remote", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "STEADYTEXT_BENCH_PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "quick" and results["benchmarks"]["bench_remote"]["status"] == "ok"
    assert "| comparison | ours | reference |" in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.slow
def test_bench_recovery_quick() -> None:
    got = run("bench_recovery.py", "--quick")
    assert figures(got) == {"recovery", "recovery_ratio"}
    assert {line["spare_workers"] for line in got if line["figure"] == "recovery"} == {0, 1}
