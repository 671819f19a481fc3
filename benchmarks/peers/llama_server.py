"""llama.cpp's own ``llama-server`` as a benchmark peer: parallel slots and continuous batching, the server people
serving many users would pick. Built once by ``scripts/build_llama_server.sh`` from the llama.cpp vendored in the
llama-cpp-python sdist the engine runs (same kernels, same flags as the wheel); never built on the test path.

``binary()`` finds it (``STEADYTEXT_LLAMA_SERVER`` or the build script's cache); :func:`running` starts it on
loopback with ``slots`` parallel slots of ``n_ctx`` cells each, and :func:`complete` posts one greedy
``/completion`` (native endpoint, ``cache_prompt`` off, so every request evaluates its whole prompt, as ours do).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MISSING", "binary", "complete", "running"]

VERSION = "0.3.36-native-off-openmp-off"
MISSING = (
    "llama-server is not built: run `nice -n 19 bash scripts/build_llama_server.sh` once (about 10 minutes on 2 "
    "cores; cached under ~/.cache/steadytext-async/llama-server) or set STEADYTEXT_LLAMA_SERVER to a binary"
)


def binary() -> Path | None:
    """The llama-server binary, or None when it was never built."""
    given = os.environ.get("STEADYTEXT_LLAMA_SERVER")
    if given:
        return Path(given) if os.access(given, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = Path(os.environ.get("STEADYTEXT_LLAMA_SERVER_CACHE") or cache / "steadytext-async" / "llama-server")
    path = root / VERSION / "bin" / "llama-server"
    return path if os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def running(model: str, *, slots: int, threads: int, n_ctx: int = 2048, log: Path | None = None) -> Iterator[str]:
    """A llama-server on 127.0.0.1 with ``slots`` parallel slots of ``n_ctx`` cells each; yields its base URL."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError(MISSING)
    port = _free_port()
    cmd = [str(exe), "-m", model, "--host", "127.0.0.1", "--port", str(port), "-np", str(slots)]
    cmd += ["-c", str(n_ctx * slots), "-t", str(threads), "-tb", str(threads), "--no-webui"]
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-2000:] if log is not None else ""
                raise RuntimeError(f"llama-server exited with {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become healthy in 300 s")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not isinstance(out, int):  # subprocess.DEVNULL
            out.close()


def body(prompt: str | list[int], tokens: int, seed: int = 42) -> dict[str, Any]:
    """A greedy native ``/completion`` request (text or token ids): no prompt cache, exactly ``tokens`` unless an end
    token comes."""
    return {"prompt": prompt, "n_predict": tokens, "temperature": 0.0, "seed": seed, "cache_prompt": False}


async def complete(client: Any, prompt: str | list[int], tokens: int) -> tuple[float, str, int]:
    """(seconds, text, completion tokens) of one request through an ``httpx.AsyncClient`` on the server's URL."""
    t0 = time.perf_counter()
    response = await client.post("/completion", json=body(prompt, tokens))
    response.raise_for_status()
    doc = response.json()
    return time.perf_counter() - t0, str(doc["content"]), int(doc.get("tokens_predicted", 0))
