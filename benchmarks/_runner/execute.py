"""Run one table entry as a subprocess and record what happened: figures, status, duration, and why if not ok."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import venvs
from table import Entry

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent


def skipped(entry: Entry, status: str, reason: str) -> dict[str, Any]:
    return {"name": entry.name, "status": status, "reason": reason, "compares": entry.compares, "figures": []}


def run_entry(entry: Entry, quick: bool, budget: float | None = None) -> dict[str, Any]:
    """Run ``entry``; ``budget``: seconds left for the whole run (its timeout is cut to fit)."""
    script = BENCH_DIR / entry.script
    if not script.exists():
        where = f" (lands with {entry.lands_with})" if entry.lands_with else ""
        return skipped(entry, "missing", f"benchmarks/{entry.script} is not in this checkout{where}")
    for exe in entry.requires:
        if shutil.which(exe) is None:
            return skipped(entry, "skipped", f"{exe} is not installed (apt-get install -y {exe})")
    python = sys.executable
    if entry.venv is not None:
        try:
            python = str(venvs.ensure(entry.venv))
        except (venvs.VenvError, TimeoutError) as exc:
            return skipped(entry, "unavailable", f"could not build its venv: {exc}")
    args = entry.quick if quick else entry.full
    timeout = entry.timeout_quick if quick else entry.timeout_full
    if budget is not None:
        timeout = max(1, min(timeout, int(budget)))
    env = {**os.environ, **entry.env, "STEADYTEXT_BENCH_PROJECT_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    env.pop("STEADYTEXT_CACHE_URL", None)  # a benchmark picks its own cache; never the user's shared one
    cmd = [python, str(script), *args]
    t0 = time.perf_counter()
    # Its own session, so a timeout ends the benchmark *and* what it started (a raw llama process, a server) and
    # nothing left behind keeps the output pipes open.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)  # fmt: skip
    code: int | None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    seconds = round(time.perf_counter() - t0, 1)
    figures, text = parse(stdout)
    record: dict[str, Any] = {
        "name": entry.name,
        "compares": entry.compares,
        "command": " ".join(["benchmarks/" + entry.script, *args]),
        "interpreter": "project .venv" if entry.venv is None else f"peer venv {venvs.VENVS[entry.venv].dirname}",
        "seconds": seconds,
        "figures": figures,
    }
    if text:
        record["text"] = text[-4000:]
    if code == 0:
        record["status"] = "ok"
    else:
        record["status"] = "timeout" if code is None else "failed"
        why = f"timed out after {timeout} s" if code is None else f"exited {code}"
        tail = " | ".join(line for line in stderr.strip().splitlines()[-5:] if line.strip())
        record["reason"] = f"{why}: {tail}" if tail else why
    return record


def parse(stdout: str) -> tuple[list[dict[str, Any]], str]:
    """JSON lines are figures; any other line is kept as text (a benchmark's own table, for instance)."""
    figures: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                other.append(line)
                continue
            if isinstance(value, dict):
                figures.append(value)
                continue
        if line.strip():
            other.append(line)
    return figures, "\n".join(other)
