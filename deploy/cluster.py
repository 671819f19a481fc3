"""A cluster on one host: ``steadytext-async serve`` replicas behind HAProxy (``deploy/haproxy.cfg``), one Redis.

Run it to try the deployment locally (it stays up until Ctrl-C; needs ``haproxy`` and ``redis-server``)::

    python deploy/cluster.py --port 8080          # then: curl localhost:8080/v1/completions -d '{"prompt": "Hi"}'

The tests (``tests/test_cluster*.py``) import :class:`Cluster` from here, so what they check is what this starts:
each replica is its own process on its own loopback port with its own local cache directory, all of them share
the Redis cache (``STEADYTEXT_CACHE_URL``) and this host's thread budget, and HAProxy runs the shipped config
with the addresses passed in its environment. Faults are methods: :meth:`Cluster.kill` (SIGKILL),
:meth:`Cluster.restart` (SIGTERM drain, then start again on the same port), :meth:`Cluster.rolling_restart`,
:meth:`Cluster.stop_redis` / :meth:`Cluster.start_redis`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["HAPROXY_CFG", "Cluster", "free_port"]

HAPROXY_CFG = Path(__file__).resolve().parent / "haproxy.cfg"
REPLICAS = 3  # the shipped haproxy.cfg names three servers (ST_REPLICA_1..3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (Debian: apt-get install -y {name})")
    return path


class _Proc:
    def __init__(self, name: str, port: int, log: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str], env: Mapping[str, str]) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(10)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


class Cluster:
    """Three replicas, HAProxy and Redis on 127.0.0.1. Use as a context manager (or ``start()``/``close()``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        lb_port: int = 0,
        affinity: bool = True,
        workers: int = 1,
        threads: int = 1,
        shutdown_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] = (),
        start_timeout: float = 180.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.affinity = affinity
        self.shutdown_timeout = shutdown_timeout
        self.start_timeout = start_timeout
        self.serve_args = list(serve_args)
        self.redis = _Proc("redis", free_port(), self.workdir / "redis.log")
        self.replicas = [_Proc(f"r{i + 1}", free_port(), self.workdir / f"r{i + 1}.log") for i in range(REPLICAS)]
        self.haproxy = _Proc("haproxy", lb_port or free_port(), self.workdir / "haproxy.log")
        self.stats_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis.port}/0"
        base = {k: v for k, v in os.environ.items() if k != "STEADYTEXT_DAEMON_URL"}
        self._env = {
            **base,
            "STEADYTEXT_WORKERS": str(workers),
            "STEADYTEXT_THREADS": str(threads),
            "STEADYTEXT_CACHE_URL": self.redis_url,
            "STEADYTEXT_DISABLE_CACHE": "0",  # the shared cache is the point
            **(env or {}),
        }

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.start_redis()
        for i in range(REPLICAS):
            self._spawn_replica(i)
        self._start_haproxy()
        for i in range(REPLICAS):
            self.wait_ready(i)

    def close(self) -> None:
        for proc in self.replicas:
            proc.signal(signal.SIGTERM)
        for proc in self.replicas:
            if proc.popen is not None:
                proc.wait(self.shutdown_timeout + 15)
        for proc in (self.haproxy, self.redis):
            proc.signal(signal.SIGTERM)
            if proc.popen is not None:
                proc.wait(10)

    @property
    def url(self) -> str:
        """The load balancer: what clients use."""
        return f"http://127.0.0.1:{self.haproxy.port}"

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replicas[i].port}"

    # -- replicas --------------------------------------------------------------------------------------------
    def _spawn_replica(self, i: int) -> None:
        proc = self.replicas[i]
        env = {
            **self._env,
            "STEADYTEXT_REPLICA_ID": proc.name,
            "STEADYTEXT_CACHE_DIR": str(self.workdir / f"{proc.name}-cache"),
        }
        args = [sys.executable, "-m", "steadytext_async", "serve", "--host", "127.0.0.1", "--port", str(proc.port)]
        proc.start([*args, "--shutdown-timeout", str(self.shutdown_timeout), *self.serve_args], env)

    def wait_ready(self, i: int) -> None:
        """Until replica ``i`` answers /health with 200 and HAProxy has it UP."""
        proc = self.replicas[i]
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not proc.alive:
                raise RuntimeError(f"replica {proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.replica_url(i) + "/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {proc.name} not healthy after {self.start_timeout} s:\n{proc.tail()}")
            time.sleep(0.1)
        self.wait_lb(proc.name, "UP", timeout=30)

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` (its workers exit with it); HAProxy notices through failed requests and checks."""
        proc = self.replicas[i]
        proc.signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, i: int) -> int:
        """SIGTERM replica ``i`` and wait for its drain; its exit code."""
        proc = self.replicas[i]
        proc.signal(signal.SIGTERM)
        return proc.wait(self.shutdown_timeout + 15)

    def start_replica(self, i: int) -> None:
        self._spawn_replica(i)
        self.wait_ready(i)

    def restart(self, i: int) -> int:
        code = self.stop(i)
        self.start_replica(i)
        return code

    def rolling_restart(self) -> list[int]:
        """SIGTERM, wait, start again: one replica at a time, each back in the rotation before the next goes."""
        return [self.restart(i) for i in range(REPLICAS)]

    def metrics(self, i: int) -> str:
        response = httpx.get(self.replica_url(i) + "/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    # -- Redis -----------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        args = [binary("redis-server"), "--bind", "127.0.0.1", "--port", str(self.redis.port)]
        args += ["--dir", str(self.workdir), "--save", "", "--appendonly", "no", "--maxmemory-policy", "allkeys-lfu"]
        self.redis.start(args, os.environ)
        deadline = time.monotonic() + 10
        while not self._redis_pings():
            if not self.redis.alive or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.redis.tail()}")
            time.sleep(0.02)

    def flush_redis(self) -> None:
        with socket.create_connection(("127.0.0.1", self.redis.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            if not s.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")

    def stop_redis(self) -> None:
        self.redis.signal(signal.SIGKILL)
        self.redis.wait(10)

    def _redis_pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    # -- HAProxy ---------------------------------------------------------------------------------------------
    def _start_haproxy(self) -> None:
        env = {
            **os.environ,
            "ST_LB_BIND": f"127.0.0.1:{self.haproxy.port}",
            "ST_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "ST_AFFINITY": "on" if self.affinity else "off",
            **{f"ST_REPLICA_{i + 1}": f"127.0.0.1:{p.port}" for i, p in enumerate(self.replicas)},
        }
        self.haproxy.start([binary("haproxy"), "-W", "-db", "-f", str(HAPROXY_CFG)], env)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                self.lb_status()
                return
            if not self.haproxy.alive or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.haproxy.tail()}")
            time.sleep(0.05)

    def restart_haproxy(self, *, affinity: bool) -> None:
        """Run the balancer again with cache affinity on or off (waits until it sees every live replica UP)."""
        self.haproxy.signal(signal.SIGTERM)
        self.haproxy.wait(10)
        self.affinity = affinity
        self._start_haproxy()
        for proc in self.replicas:
            if proc.alive:
                self.wait_lb(proc.name, "UP", timeout=30)

    def lb_status(self) -> dict[str, str]:
        """HAProxy's view of each replica: ``{"r1": "UP", ...}`` (from its CSV stats)."""
        response = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5)
        response.raise_for_status()
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "replicas" and r["svname"].startswith("r")}

    def lb_counters(self) -> dict[str, dict[str, str]]:
        """HAProxy's per-server CSV rows (retries ``wretr``, redispatches ``wredis``, responses ``hrsp_5xx``...)."""
        response = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5)
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "replicas"}

    def wait_lb(self, name: str, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.lb_status().get(name, "").startswith(state):
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy never saw {name} {state}: {self.lb_status()}")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8080, help="the load balancer's port on 127.0.0.1")
    p.add_argument("--dir", type=Path, default=Path("cluster-run"), help="logs and local caches")
    p.add_argument("--no-affinity", action="store_true", help="least connections instead of request hashing")
    args = p.parse_args(argv)
    with Cluster(args.dir, lb_port=args.port, affinity=not args.no_affinity) as cluster:
        print(f"cluster: {cluster.url} (replicas {[r.port for r in cluster.replicas]}, {cluster.redis_url})")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
