"""``benchmarks/run``: every benchmark in the table, the peers, the determinism matrix, then results and plots.

Writes ``<out>/results.json``, ``<out>/RESULTS.md`` and ``<out>/plots/*.png`` (``--out`` defaults to ``benchmarks/``).
Benchmarks run one after another (they would otherwise compete for the cores and measure each other).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import execute
import machine
import report
from table import BENCHMARKS, RUN_ORDER, Entry

# The page whose results block `--update-docs` rewrites (between <!-- results:begin --> and <!-- results:end -->).
RESULTS_PAGE = execute.ROOT / "docs" / "benchmarks" / "index.md"


def discover() -> list[str]:
    return sorted(p.stem for p in execute.BENCH_DIR.glob("bench_*.py"))


def plan(args: argparse.Namespace) -> tuple[list[Entry], dict[str, dict[str, Any]]]:
    """Entries to run, and records for what will not run (undeclared, not selected, peers skipped)."""
    declared = {e.name for e in BENCHMARKS}
    notes: dict[str, dict[str, Any]] = {}
    for stem in discover():
        if stem not in declared:
            notes[stem] = {
                "name": stem,
                "status": "skipped",
                "figures": [],
                "compares": "",
                "reason": "not in the runner's table (add its quick/full arguments to benchmarks/_runner/table.py)",
            }
    entries = list(RUN_ORDER)
    chosen: list[Entry] = []
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {e.name for e in entries}
    if unknown:
        raise SystemExit(f"run: unknown --only names {sorted(unknown)}; known: {[e.name for e in entries]}")
    for e in entries:
        if only is not None and e.name not in only:
            notes[e.name] = execute.skipped(e, "not selected", f"--only {args.only}")
        elif args.skip_peers and e.name.startswith("peer_"):
            notes[e.name] = execute.skipped(e, "not selected", "--skip-peers")
        else:
            chosen.append(e)
    return chosen, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bounded form (each benchmark's quick arguments)")
    ap.add_argument("--out", type=Path, default=execute.BENCH_DIR, help="output directory (default benchmarks/)")
    ap.add_argument("--only", default=None, help="comma-separated names from the table (e.g. bench_core,determinism)")
    ap.add_argument("--skip-peers", action="store_true", help="do not build peer venvs or run peers")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run: later entries are cut "
        "short or recorded as skipped (the order of the table is the order of importance)",
    )
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--update-docs", action="store_true", help="rewrite the results table of docs/benchmarks/index.md from this run"
    )
    ap.add_argument(
        "--from-results",
        type=Path,
        default=None,
        help="only redraw RESULTS.md and plots from a JSON "
        "(results.json, or results.partial.json of a run that was cut off)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.from_results.read_text()) if args.from_results else run_all(args)
    results["headline"] = report.headline(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    plots: list[str] = []
    if not args.no_plots:
        try:
            import plots as plotting
        except ImportError as exc:  # matplotlib is in the test extras
            print(f"run: no plots ({exc}); pip install -e '.[test]'", file=sys.stderr)
        else:
            plots = plotting.draw_all(results, args.out / "plots")
    (args.out / "RESULTS.md").write_text(report.markdown(results, plots))
    (args.out / "results.partial.json").unlink(missing_ok=True)
    if args.update_docs:
        update_results_block(RESULTS_PAGE, report.results_block(results))
    bad = [n for n, r in results["benchmarks"].items() if r["status"] in ("failed", "timeout")]
    print(
        f"run: wrote {args.out / 'results.json'}, RESULTS.md and {len(plots)} plots; "
        f"{len(bad)} failed: {', '.join(bad) or 'none'}",
        file=sys.stderr,
    )
    return 1 if bad else 0


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    entries, notes = plan(args)
    results: dict[str, Any] = {
        "command": "benchmarks/run" + (" --quick" if args.quick else ""),
        "mode": "quick" if args.quick else "full",
        "started_utc": _now(),
        "machine": machine.describe(),
        "benchmarks": {},
    }
    for entry in entries:
        left = None if args.budget is None else args.budget - (time.perf_counter() - started)
        if left is not None and left < 30:
            results["benchmarks"][entry.name] = execute.skipped(entry, "skipped", f"--budget {args.budget:.0f} s spent")
            continue
        print(f"run: {entry.name} ...", file=sys.stderr, flush=True)
        record = execute.run_entry(entry, args.quick, left)
        reason = f" ({record['reason'][:200]})" if "reason" in record else ""
        print(f"run: {entry.name} {record['status']} {record.get('seconds', '')}{reason}", file=sys.stderr, flush=True)
        results["benchmarks"][entry.name] = record
        partial = {**results, "finished_utc": "(partial)", "seconds": round(time.perf_counter() - started, 1)}
        (args.out / "results.partial.json").write_text(json.dumps(partial, indent=1) + "\n")
    results["benchmarks"].update(notes)
    results["finished_utc"] = _now()
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def update_results_block(path: Path, block: str) -> None:
    """Replace what lies between the page's results markers with ``block``; the rest of the page is kept."""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{block}\n{end}{tail}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    sys.exit(main())
