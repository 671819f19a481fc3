"""PNG charts from results.json (matplotlib, Agg). A chart whose data is missing still gets drawn, saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from report import figures

Results = dict[str, Any]
LEVELS = [1, 2, 4, 8, 16]


def _why(results: Results, bench: str) -> str:
    rec = results["benchmarks"].get(bench)
    if rec is None:
        return f"{bench}: not run"
    return f"{bench}: {rec['status']}" + (f" ({rec['reason'][:90]})" if rec.get("reason") else "")


def _caption(fig: Figure, text: str, results: Results) -> None:
    m = results["machine"]
    where = f"{m['cpu_model']}, {m['cores_usable']} cores, load {m['load_average_at_start'][0]} at start"
    fig.text(0.01, 0.01, f"{text}\n{results['command']} · {results['finished_utc']} · {where}", fontsize=8,
             va="bottom", ha="left", wrap=True)  # fmt: skip


def _empty(ax: Axes, why: str) -> None:
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", fontsize=9, transform=ax.transAxes, wrap=True)


def concurrency(results: Results, out: Path) -> None:
    fig, (tps, p99) = plt.subplots(1, 2, figsize=(12, 5.2))
    series: list[tuple[str, list[int], list[float], list[float], dict[str, Any]]] = []
    batching = figures(results, "bench_batching", "batching_concurrency")
    if batching:
        xs = [f["concurrent"] for f in batching]
        series.append(("steadytext-async, batching on", xs, [f["on_tok_s"] for f in batching],
                       [f["on_p99_s"] for f in batching], {"marker": "o", "color": "tab:blue"}))  # fmt: skip
        series.append(("steadytext-async, batching off", xs, [f["off_tok_s"] for f in batching],
                       [f["off_p99_s"] for f in batching], {"marker": "s", "color": "tab:orange"}))  # fmt: skip
    conc = figures(results, "bench_concurrency", "concurrency_vs_raw")
    if conc:
        xs = [f["concurrent"] for f in conc]
        label = "steadytext-async, default settings" + ("" if batching else " (batching off: today's behaviour)")
        series.append((label, xs, [f["sdk_tok_s"] for f in conc], [f["sdk_p99_s"] for f in conc],
                       {"marker": "^", "color": "tab:green"}))  # fmt: skip
        series.append(("raw llama-cpp-python (one Llama, requests in turn)", xs, [f["raw_tok_s"] for f in conc],
                       [f["raw_p99_s"] for f in conc], {"ls": "--", "color": "black", "marker": "x"}))  # fmt: skip
    peer = figures(results, "bench_concurrency", "concurrency_vs_llama_server")
    if peer:
        distinct = {f["impl"]: f["max_per_prompt"] for f in figures(results, "bench_concurrency", "distinct_outputs")}
        label = "llama.cpp llama-server (N slots, continuous batching)"
        if "llama_server" in distinct:
            label += f"; up to {distinct['llama_server']} outputs per prompt (ours {distinct.get('sdk', '?')})"
        style = {"ls": ":", "color": "tab:red", "marker": "D"}
        series.append((label, [f["concurrent"] for f in peer], [f["llama_server_tok_s"] for f in peer],
                       [f["llama_server_p99_s"] for f in peer], style))  # fmt: skip
    for ax, idx, ylabel, title in ((tps, 2, "aggregate throughput (tokens/s)", "Throughput: higher is better"),
                                   (p99, 3, "p99 request latency (s)", "p99 latency: lower is better")):  # fmt: skip
        for s in series:
            ax.plot(s[1], s[idx], label=s[0], **s[4])
        ax.set_xscale("log", base=2)
        ax.set_xticks(LEVELS, [str(x) for x in LEVELS])
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    if series:
        tps.legend(fontsize=8, loc="best")
    else:
        _empty(tps, _why(results, "bench_concurrency"))
    gaps = [] if batching else [_why(results, "bench_batching")]
    skipped = figures(results, "bench_concurrency", "llama_server_skipped")
    if skipped:
        gaps.append("llama-server not built (scripts/build_llama_server.sh)")
    note = f" Gap: {'; '.join(gaps)}." if gaps else ""
    _caption(fig, "Greedy decode of unique prompts, result cache off; each curve measured in the same run. "
             f"Higher throughput and lower p99 are better.{note}", results)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "concurrency.png", dpi=110)
    plt.close(fig)


def cache_hits(results: Results, out: Path) -> None:
    rows = figures(results, "bench_cache_hits", "cache_hit_latency")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    titles = {"backend": "Backend hit (first read in a fresh process)", "front": "In-process hit (repeat)"}
    style = {"sqlite": "tab:blue", "redis": "tab:red"}
    for ax, layer in zip(axes, ("backend", "front"), strict=True):
        chosen = [r for r in rows if r["layer"] == layer]
        for r in chosen:
            pct = [5 * i for i in range(len(r["quantiles_us"]))]
            ls = "-" if r["api"] == "generate" else "--"
            name = "whole (generate)" if r["api"] == "generate" else "streamed (stream)"
            ax.plot([q / 1000 for q in r["quantiles_us"]], pct, ls=ls, color=style[r["backend"]], marker=".",
                    label=f"{r['backend']}, {name}, p50 {r['p50_us'] / 1000:.2f} ms (n={r['n']})")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("hit latency through the client (ms, log scale)")
        ax.set_title(titles[layer])
        ax.grid(True, which="both", alpha=0.3)
        if chosen:
            ax.legend(fontsize=8, loc="lower right")
        else:
            _empty(ax, _why(results, "bench_cache_hits"))
    axes[0].set_ylabel("share of hits at or below (%)")
    _caption(fig, "Cumulative distribution of cache-hit latency (16-token results). Curves further left and "
             "steeper are better.", results)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "cache_hits.png", dpi=110)
    plt.close(fig)


def remote(results: Results, out: Path) -> None:
    p50 = {f["figure"][: -len(".p50")]: f["value"] for f in results["benchmarks"].get("bench_remote", {})
           .get("figures", []) if str(f.get("figure", "")).endswith(".p50")}  # fmt: skip
    bars: dict[str, dict[str, float]] = {"json": {}, "sse": {}}
    for mode, ours, raw in (("json", "router_generate", "raw_httpx_json"), ("sse", "router_stream", "raw_httpx_sse")):
        if ours in p50 and raw in p50:
            bars[mode]["steadytext-async"] = p50[ours] - p50[raw]
    names = {"openai": "openai-python", "litellm": "LiteLLM"}
    for f in figures(results, "peer_remote_clients", "client_p50"):
        if f["client"] in names:
            bars[f["mode"]][f"{names[f['client']]} {f.get('version') or ''}".strip()] = f["overhead_ms"]
    fig, ax = plt.subplots(figsize=(10, 5))
    labels = sorted({k for m in bars.values() for k in m}, key=lambda k: (not k.startswith("steady"), k))
    width = 0.38
    for j, (mode, title) in enumerate((("json", "non-streamed"), ("sse", "streamed (SSE)"))):
        xs = [i + (j - 0.5) * width for i in range(len(labels))]
        vals = [bars[mode].get(k, float("nan")) for k in labels]
        ax.bar(xs, vals, width, label=title)
        for x, v in zip(xs, vals, strict=True):
            if v == v:
                ax.annotate(f"{v:.2f}", (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("p50 overhead over raw httpx in the same process (ms)")
    ax.set_title("Remote request overhead: lower is better")
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(True, axis="y", alpha=0.3)
    if labels:
        ax.legend()
    else:
        _empty(ax, f"{_why(results, 'bench_remote')}; {_why(results, 'peer_remote_clients')}")
    gaps = [_why(results, b) for b in ("bench_remote", "peer_remote_clients")
            if results["benchmarks"].get(b, {}).get("status") != "ok"]  # fmt: skip
    _caption(fig, "Instant-answer loopback server, 16-token chat completion, unique prompts, cache off. "
             "0 = raw httpx.AsyncClient.post." + (f" Gap: {'; '.join(gaps)}." if gaps else ""), results)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "remote_overhead.png", dpi=110)
    plt.close(fig)


def multiprocess(results: Results, out: Path) -> None:
    figs = [f for f in results["benchmarks"].get("bench_multiprocess", {}).get("figures", []) if "tok_s" in f]
    fig, ax = plt.subplots(figsize=(9, 5))
    labels, vals, ratios = [], [], []
    for f in figs:
        name = f["figure"]
        if name == "one_process":
            label = f"1 process\n{f['concurrent']} concurrent"
        elif name == "two_clients":
            label = f"1 process, 2 clients\n{f['concurrent_each']} each"
        else:
            label = f"{f['processes']} processes\n{f['concurrent_each']} each"
        labels.append(label)
        vals.append(f["tok_s"])
        ratios.append(float(f.get("ratio", 1.0)))
    colors = ["black" if "1 process\n" in lb else "tab:blue" for lb in labels]
    ax.bar(range(len(vals)), vals, color=colors)
    for i, (v, r) in enumerate(zip(vals, ratios, strict=True)):
        ax.annotate(f"{v:.1f} tok/s\n×{r:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, max(vals, default=1) * 1.2)
    ax.set_ylabel("aggregate throughput (tokens/s)")
    ax.set_title("Multi-process vs single process: higher is better (×: ratio to the single-process run before it)")
    ax.grid(True, axis="y", alpha=0.3)
    if not vals:
        _empty(ax, _why(results, "bench_multiprocess"))
    _caption(fig, "Same total tokens and concurrency per group, unique prompts, cache off; every process on one "
             "host shares its cores.", results)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "multiprocess.png", dpi=110)
    plt.close(fig)


def draw_all(results: Results, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    concurrency(results, out)
    cache_hits(results, out)
    remote(results, out)
    multiprocess(results, out)
    return ["concurrency.png", "cache_hits.png", "remote_overhead.png", "multiprocess.png"]
