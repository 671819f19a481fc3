"""Start several Python scripts, release them at the same moment, and collect each one's last JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_together(scripts: list[list[str]], timeout: float = 100) -> list[tuple[dict[str, Any], str]]:
    """Each entry is ``[code, *argv]`` for ``python -c``. A script prints ``ready``, waits for a line on stdin,
    then ends with one JSON line. Returns ``(report, stderr)`` per script; a failed script fails the caller."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", *script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in scripts
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:  # start together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            results.append((json.loads(out.strip().splitlines()[-1]), err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
