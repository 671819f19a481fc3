"""Throwaway virtual environments for peers, cached so reruns are fast.

Each peer gets ``~/.cache/steadytext-async/bench-venvs/<key>-<version>/`` (``STEADYTEXT_BENCH_VENVS`` overrides the
root), built once under a file lock and marked ready only after a successful install. Peers that depend on
llama-cpp-python get the project's prebuilt wheel (``native-off-openmp-off`` wheelhouse), the same build as ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "steadytext-async"
LLAMA_VERSION = "0.3.36"


@dataclass(frozen=True)
class VenvSpec:
    key: str
    requirements: tuple[str, ...]
    uses_llama_wheel: bool = False

    @property
    def dirname(self) -> str:
        return f"{self.key}-" + "-".join(r.split("==")[-1] for r in self.requirements[:1])


VENVS: dict[str, VenvSpec] = {
    # Pinned: the versions the figures were measured with (LiteLLM 1.107.0 was a compromised release; never float).
    "steadytext": VenvSpec("steadytext", ("steadytext==2025.11.25", f"llama-cpp-python=={LLAMA_VERSION}"), True),
    "litellm": VenvSpec("litellm", ("litellm==1.110.2", "httpx-sse>=0.4")),
}


class VenvError(Exception):
    """A peer environment could not be built; the message says why."""


def root() -> Path:
    return Path(os.environ.get("STEADYTEXT_BENCH_VENVS") or CACHE / "bench-venvs")


def wheelhouse() -> Path:
    return Path(os.environ.get("STEADYTEXT_WHEELHOUSE") or CACHE / "wheelhouse") / "native-off-openmp-off"


def base_python() -> str:
    """The interpreter our venv was made from (a venv made from a venv would chain to it anyway)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure(key: str, timeout: float = 900) -> Path:
    """The peer's python, building its venv first if needed. Raises VenvError with the pip output's tail."""
    spec = VENVS[key]
    target = root() / spec.dirname
    python = target / "bin" / "python"
    marker = target / ".ready"
    wanted = "\n".join(spec.requirements)
    root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=timeout):
        if marker.exists() and marker.read_text() == wanted and python.exists():
            return python
        _run([base_python(), "-m", "venv", "--clear", str(target)], timeout)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
        _run([*pip, "--upgrade", "pip"], timeout)
        extra: list[str] = []
        if spec.uses_llama_wheel:
            wheels = sorted(wheelhouse().glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
            if not wheels:
                raise VenvError(f"no prebuilt llama-cpp-python {LLAMA_VERSION} wheel in {wheelhouse()} (run setup)")
            extra = ["--find-links", str(wheelhouse())]
        _run([*pip, *extra, *spec.requirements], timeout)
        marker.write_text(wanted)
    return python


def _run(cmd: list[str], timeout: float) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"timed out after {timeout:.0f} s: {' '.join(cmd[:6])}") from exc
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-6:]
        raise VenvError(f"{' '.join(cmd[:6])} exited {out.returncode}: " + " | ".join(tail))
