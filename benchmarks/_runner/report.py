"""The headline rows (each a side-by-side pair from one run and its ratio) and RESULTS.md."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

Row = dict[str, Any]
Results = dict[str, Any]


def figures(results: Results, bench: str, name: str) -> list[dict[str, Any]]:
    record = results["benchmarks"].get(bench) or {}
    return [f for f in record.get("figures", []) if f.get("figure") == name]


def first(results: Results, bench: str, name: str) -> dict[str, Any] | None:
    found = figures(results, bench, name)
    return found[0] if found else None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def pair(what: str, ours: Any, ref: Any, ref_name: str, unit: str, better: str, source: str) -> Row:
    o, r = _num(ours), _num(ref)
    ratio = round(o / r, 3) if o is not None and r not in (None, 0.0) else None
    return {
        "comparison": what,
        "ours": o,
        "reference": r,
        "reference_is": ref_name,
        "unit": unit,
        "ratio": ratio,
        "better": better,
        "source": source,
    }


def _core(res: Results) -> Iterator[Row]:
    if f := first(res, "bench_core", "sdk_vs_raw_single"):
        yield pair(
            "decode, 1 request",
            f["sdk_tok_s"],
            f["raw_best_tok_s"],
            "raw llama-cpp-python (best threads)",
            "tok/s",
            "higher",
            "bench_core",
        )
    if f := first(res, "bench_core", "sdk_vs_raw_two_concurrent"):
        yield pair(
            "decode, 2 concurrent",
            f["sdk_tok_s"],
            f["raw_aggregate_tok_s"],
            "2 raw 1-thread processes",
            "tok/s",
            "higher",
            "bench_core",
        )
    if f := first(res, "bench_core", "sdk_sixteen_vs_two_concurrent"):
        yield pair(
            "decode, 16 vs 2 concurrent",
            f["sixteen_tok_s"],
            f["two_tok_s"],
            "ours at 2 concurrent",
            "tok/s",
            "higher",
            "bench_core",
        )
    if f := first(res, "bench_core", "import_time"):
        yield pair(
            "`import steadytext_async`",
            f["import_ms"],
            f["bare_python_ms"],
            "bare `python -c pass`",
            "ms",
            "lower",
            "bench_core",
        )


def _concurrency(res: Results) -> Iterator[Row]:
    for f in figures(res, "bench_concurrency", "concurrency_vs_raw"):
        c = f["concurrent"]
        yield pair(
            f"{c} concurrent, aggregate",
            f["sdk_tok_s"],
            f["raw_tok_s"],
            "raw llama-cpp-python, one Llama",
            "tok/s",
            "higher",
            "bench_concurrency",
        )
        yield pair(
            f"{c} concurrent, p99 latency",
            f["sdk_p99_s"],
            f["raw_p99_s"],
            "raw llama-cpp-python, one Llama",
            "s",
            "lower",
            "bench_concurrency",
        )
    for f in figures(res, "bench_concurrency", "concurrency_vs_llama_server"):
        c = f["concurrent"]
        for what, ours, ref, unit, better in (
            ("aggregate", f["sdk_tok_s"], f["llama_server_tok_s"], "tok/s", "higher"),
            ("p99 latency", f["sdk_p99_s"], f["llama_server_p99_s"], "s", "lower"),
        ):
            yield pair(f"{c} concurrent, {what}", ours, ref, "llama.cpp llama-server, N slots", unit, better,
                       "bench_concurrency")  # fmt: skip
    for f in figures(res, "bench_batching", "batching_concurrency"):
        yield pair(
            f"{f['concurrent']} concurrent, batching on vs off",
            f["on_tok_s"],
            f["off_tok_s"],
            "batching off",
            "tok/s",
            "higher",
            "bench_batching",
        )


def _cache(res: Results) -> Iterator[Row]:
    on = first(res, "bench_cache", "miss_latency_cache_on_p50_ms")
    off = first(res, "bench_cache", "miss_latency_cache_off_p50_ms")
    if on and off:
        yield pair(
            "cache miss p50 (cache on vs off)", on["value"], off["value"], "cache off", "ms", "lower", "bench_cache"
        )
    hit = first(res, "bench_cache", "hit_latency_p50_ms")
    if hit and off:
        yield pair(
            "cache hit p50 vs generating",
            hit["value"],
            off["value"],
            "a miss (cache off)",
            "ms",
            "lower",
            "bench_cache",
        )
    rows = {(f["backend"], f["api"], f["layer"]): f for f in figures(res, "bench_cache_hits", "cache_hit_latency")}
    for api in ("generate", "stream"):
        s, r = rows.get(("sqlite", api, "backend")), rows.get(("redis", api, "backend"))
        if s and r:
            yield pair(
                f"backend cache hit p50, {api}", r["p50_us"], s["p50_us"], "sqlite", "µs", "lower", "bench_cache_hits"
            )
    s, r = rows.get(("sqlite", "stream", "front")), rows.get(("sqlite", "generate", "front"))
    if s and r:
        yield pair(
            "in-process cache hit p50, stream vs whole",
            s["p50_us"],
            r["p50_us"],
            "whole (generate)",
            "µs",
            "lower",
            "bench_cache_hits",
        )
    p = first(res, "bench_cache_redis", "redis_backend_hit_p50_us")
    q = first(res, "bench_cache_redis", "sqlite_backend_hit_p50_us")
    if p and q:
        yield pair("backend hit p50 (no model)", p["value"], q["value"], "sqlite", "µs", "lower", "bench_cache_redis")


def _remote(res: Results) -> Iterator[Row]:
    p50 = {
        f["figure"][: -len(".p50")]: f["value"]
        for f in res["benchmarks"].get("bench_remote", {}).get("figures", [])
        if str(f.get("figure", "")).endswith(".p50")
    }
    for ours, raw in (("router_generate", "raw_httpx_json"), ("router_stream", "raw_httpx_sse")):
        if ours in p50 and raw in p50:
            yield pair(
                f"remote request p50, `{ours}`",
                p50[ours],
                p50[raw],
                "raw httpx, same process",
                "ms",
                "lower",
                "bench_remote",
            )
    for f in figures(res, "peer_remote_clients", "client_p50"):
        if f["client"] != "raw_httpx":
            yield pair(
                f"remote request p50, {f['client']} ({f['mode']})",
                f["p50_ms"],
                f["raw_httpx_p50_ms"],
                "raw httpx, same process",
                "ms",
                "lower",
                "peer_remote_clients",
            )


def _other(res: Results) -> Iterator[Row]:
    for f in figures(res, "bench_structured", "constrained_vs_unconstrained"):
        yield pair(
            f"constrained decode, {f['library']}",
            f["tok_per_s"],
            f["unconstrained_tok_per_s"],
            "unconstrained",
            "tok/s",
            "higher",
            "bench_structured",
        )
    ref = first(res, "bench_multiprocess", "one_process")
    for f in res["benchmarks"].get("bench_multiprocess", {}).get("figures", []):
        if ref and f.get("figure") != "one_process" and "tok_s" in f:
            label = f["figure"].replace("processes_", "") + " processes" if "processes_" in f["figure"] else "2 clients"
            yield pair(
                f"multi-process: {label}",
                f["tok_s"],
                ref["tok_s"],
                "one process, same total concurrency",
                "tok/s",
                "higher",
                "bench_multiprocess",
            )
    yield from _server(res)
    yield from _original(res)


def _original(res: Results) -> Iterator[Row]:
    """The original steadytext (PyPI) and ours through the same script: start-up parts and cached repeats."""
    ours, orig = first(res, "peer_steadytext_async", "first_call"), first(res, "peer_steadytext_pypi", "first_call")
    name, src = "original steadytext (PyPI)", "peer_steadytext_*"
    if ours and orig:
        yield pair("fresh process: import", ours["import_s"], orig["import_s"], name, "s", "lower", src)
        yield pair("fresh process: preload_models()", ours["load_s"], orig["load_s"], name, "s", "lower", src)
        chars = f"ours {ours['first_output_chars']} chars, original {orig['first_output_chars']}"
        yield pair(
            f"fresh process: first generate ({chars})",
            ours["first_generate_s"],
            orig["first_generate_s"],
            name,
            "s",
            "lower",
            src,
        )
    ours, orig = (
        first(res, "peer_steadytext_async", "cached_repeat"),
        first(res, "peer_steadytext_pypi", "cached_repeat"),
    )
    if ours and orig:
        yield pair("cached repeat p50", ours["p50_us"], orig["p50_us"], name, "µs", "lower", src)
        yield pair("cached repeat p99", ours["p99_us"], orig["p99_us"], name, "µs", "lower", src)


def _server(res: Results) -> Iterator[Row]:
    """bench_server: our ``serve`` (cache on and off) against ``python -m llama_cpp.server``, same GGUF."""
    peers = {"llama_cpp": "python -m llama_cpp.server", "llama_server": "llama.cpp llama-server, N slots"}
    for workload, (peer, ref_name) in itertools.product(("unique", "repeated"), peers.items()):
        rows = {f["server"]: f for f in figures(res, "bench_server", f"server_{workload}")}
        ref = rows.get(peer)
        for ours in ("steadytext", "steadytext_nocache"):
            if ref and ours in rows:
                what = f"serve{' (cache off)' if ours.endswith('nocache') else ''}, {workload} prompts"
                yield pair(
                    f"{what}, throughput",
                    rows[ours]["tok_per_s"],
                    ref["tok_per_s"],
                    ref_name,
                    "tok/s",
                    "higher",
                    "bench_server",
                )
                yield pair(
                    f"{what}, p99 latency", rows[ours]["p99_ms"], ref["p99_ms"], ref_name, "ms", "lower", "bench_server"
                )
    same = {f["server"]: f.get("identical") for f in figures(res, "bench_server", "identical_after_different_prompts")}
    if "llama_cpp" in same and "steadytext" in same:
        row = pair(
            "same bytes after different earlier prompts",
            None,
            None,
            "python -m llama_cpp.server",
            "",
            "yes",
            "bench_server",
        )
        row["ours"], row["reference"] = _yes(same["steadytext"]), _yes(same["llama_cpp"])
        yield row
    if "llama_server" in same and "steadytext" in same:
        row = pair("same bytes after different earlier prompts", None, None, peers["llama_server"], "", "yes",
                   "bench_server")  # fmt: skip
        row["ours"], row["reference"] = _yes(same["steadytext"]), _yes(same["llama_server"])
        yield row


def _yes(x: Any) -> str:
    return "yes" if x else "no"


def headline(results: Results) -> list[Row]:
    makers: list[Callable[[Results], Iterator[Row]]] = [_core, _concurrency, _cache, _remote, _other]
    return [row for make in makers for row in make(results)]


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def headline_table(results: Results) -> list[str]:
    lines = ["| comparison | ours | reference | unit | ratio | better | source |", "|---|---|---|---|---|---|---|"]
    for row in results["headline"]:
        if "detail" in row:
            detail = ", ".join(f"{k}={_fmt(v)}" for k, v in row["detail"].items())
            lines.append(f"| {row['comparison']} | {detail} | {row['reference_is']} | | | | {row['source']} |")
            continue
        lines.append(
            f"| {row['comparison']} | {_fmt(row['ours'])} | {_fmt(row['reference'])} ({row['reference_is']}) | "
            f"{row['unit']} | {_fmt(row['ratio'])} | {row['better']} | {row['source']} |"
        )
    return lines


def results_block(results: Results) -> str:
    """The results table of docs/benchmarks/index.md: headline pairs, the determinism verdict, what did not run.

    Its link is relative to that page, beside which ``RESULTS.md`` is a symlink to ``benchmarks/RESULTS.md``."""
    m = results["machine"]
    lines = [
        f"Measured {results['finished_utc']} by `{results['command']}` on {m['cpu_model']} ({m['cores_usable']} "
        f"cores, load average {m['load_average_at_start'][0]} at start, shared with other jobs); "
        "ratio = ours / reference. Full detail: [`benchmarks/RESULTS.md`](RESULTS.md).",
        "",
        *headline_table(results),
    ]
    summary = first(results, "determinism", "determinism_summary")
    if summary:
        lines += ["", f"Determinism matrix: **{summary['identical_cells']} of {summary['cells']} cells identical**, "
                  f"sha256 over all outputs `{summary['sha256'][:16]}…`."]  # fmt: skip
    orig = first(results, "peer_steadytext_pypi", "summary")
    if orig:
        lines += ["", f"The original `steadytext` returned an empty string for {orig['empty_outputs']} of "
                  f"{orig['prompts']} prompts on the same model (see RESULTS.md for both outputs)."]  # fmt: skip
    gaps = [f"`{n}`: {r['status']} ({r.get('reason', '')[:160]})" for n, r in results["benchmarks"].items()
            if r["status"] not in ("ok", "not selected")]  # fmt: skip
    if gaps:
        lines += ["", "Not in this run: " + "; ".join(g.replace("|", "/") for g in gaps) + "."]
    return "\n".join(lines)


def markdown(results: Results, plots: list[str]) -> str:
    m = results["machine"]
    lines = [
        "# steadytext-async benchmark results",
        "",
        f"Generated by `{results['command']}` on {results['finished_utc']} ({results['mode']} run, "
        f"{results['seconds']:.0f} s). Regenerate with `benchmarks/run`; raw figures are in `results.json`.",
        "Every row is a pair measured side by side in the same run; ratio = ours / reference. Absolute times on a",
        "shared 2-core machine are noise, ratios much less so.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores_usable']} usable cores ({m['cores_logical']} logical), "
        f"{m['memory_gib']} GiB; load average at start {m['load_average_at_start']}",
        f"- {m['platform']}, Python {m['python']}; {m.get('redis_server') or 'no redis-server'}",
        f"- llama.cpp build: `{m['llama_cpp_system_info']}`",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        "",
        "## Headline",
        "",
        *headline_table(results),
    ]
    lines += _determinism(results) + _outputs(results) + ["", "## What ran", ""]
    lines += ["| benchmark | status | seconds | compares / why not |", "|---|---|---|---|"]
    for name, rec in results["benchmarks"].items():
        why = rec.get("reason") or rec.get("compares", "")
        lines.append(f"| `{name}` | {rec['status']} | {_fmt(rec.get('seconds'))} | {why.replace('|', '/')} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def _determinism(results: Results) -> list[str]:
    summary = first(results, "determinism", "determinism_summary")
    if not summary:
        return []
    out = ["", "## Determinism matrix", ""]
    out.append(
        f"{summary['identical_cells']} of {summary['cells']} cells identical; "
        f"sha256 over all outputs `{summary['sha256']}`."
    )
    out += ["", "| cell | identical | outputs |", "|---|---|---|"]
    for f in figures(results, "determinism", "determinism_cell"):
        out.append(f"| {f['cell']} | {'yes' if f['identical'] else '**NO**'} | {f['outputs']} |")
    return out


def _outputs(results: Results) -> list[str]:
    """What the original steadytext returned for the same prompts as ours (it gave "" on this base model)."""
    orig = figures(results, "peer_steadytext_pypi", "output")
    ours = {f["prompt"]: f for f in figures(results, "peer_steadytext_async", "output")}
    if not orig:
        return []
    out = ["", "## Same prompts, original steadytext vs ours", "", "| prompt | original | ours |", "|---|---|---|"]
    for f in orig:
        mine = ours.get(f["prompt"], {}).get("text")
        cells = [json.dumps(x, ensure_ascii=False)[:80].replace("|", "\\|") for x in (f["prompt"], f["text"], mine)]
        out.append("| " + " | ".join(cells) + " |")
    return out
