"""Start ``steadytext-async serve`` as a subprocess on loopback (or a unix socket) for the serve tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from conftest import VERDICTS

# what the in-process goldens use; servers get the same by default
SDK_SETTINGS: dict[str, Any] = {"workers": 1, "threads": 2}


class ServeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path, uds: str | None) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.uds = uds

    def client(self, **kwargs: Any) -> httpx.Client:
        if self.uds is not None:
            return httpx.Client(transport=httpx.HTTPTransport(uds=self.uds), base_url="http://serve", **kwargs)
        return httpx.Client(base_url=self.url, **kwargs)

    def health(self) -> dict[str, Any]:
        with self.client(timeout=10) as c:
            body: dict[str, Any] = c.get("/health").json()
            return body

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        with self.client(timeout=10) as c:
            response = c.get("/metrics", headers=headers or {})
            assert response.status_code == 200, response.text
            return response.text

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return int(self.proc.returncode)


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` including labels) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    uds: str | None = None,
    workers: int = 1,
    threads: int = 2,
    start_timeout: float = 120.0,
) -> Iterator[ServeProcess]:
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "STEADYTEXT_WORKERS": str(workers),
        "STEADYTEXT_THREADS": str(threads),
        "STEADYTEXT_CACHE_DIR": str(tmp_path / "cache"),
        **(env or {}),
    }
    full_env.pop("STEADYTEXT_DAEMON_URL", None)
    verdicts = Path(full_env["STEADYTEXT_CACHE_DIR"]) / VERDICTS.name
    if VERDICTS.exists() and not verdicts.exists():  # the session's batching self-test verdicts (tests/conftest.py)
        verdicts.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VERDICTS, verdicts)
    where = ["--uds", uds] if uds is not None else ["--port", "0"]
    cmd = [sys.executable, "-m", "steadytext_async", "serve", *where, *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    server: ServeProcess | None = None
    try:
        deadline = time.monotonic() + start_timeout
        url = None
        while url is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {log.read_text()[-3000:]}")
            m = re.search(r"listening on (\S+)", log.read_text())
            url = m.group(1) if m else None
            time.sleep(0.05)
        server = ServeProcess(proc, url, log, uds)
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if server.health()["status"] == "ok":
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve not healthy: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if server is not None:
            server.stop()
        elif proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def sse_events(raw: bytes) -> list[Any]:
    """Parse an SSE body: every event must be one ``data:`` line followed by a blank line."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    out: list[Any] = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# What the worker happened to run under, recorded but not part of the output: the threads it had then, the batch
# limit (1 while its batching self-test had not decided yet, the verdict after) and the sequences of the context the
# request finished in (the kernel's n_seq_max: 1 before the worker moved to its wide context).
_CIRCUMSTANCES = ("n_threads", "max_batch")


def _settled(fp: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in fp.items() if k not in _CIRCUMSTANCES}
    if isinstance(out.get("kernel"), str):
        out["kernel"] = ",".join(p for p in out["kernel"].split(",") if not p.startswith("n_seq_max="))
    return out


def same_fingerprint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Fingerprints equal except what the worker ran under (see ``_CIRCUMSTANCES``; outputs do not depend on it)."""
    return _settled(a) == _settled(b)
