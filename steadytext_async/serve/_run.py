"""Run the server: bind the socket ourselves (a unix socket gets mode 0600), then uvicorn; drain on SIGTERM/SIGINT.

On the first SIGTERM or SIGINT the server stops accepting connections and new generations, lets in-flight requests
finish for up to ``shutdown_timeout`` seconds, then ends the rest cleanly (an error event and ``[DONE]`` for
streams, 503 otherwise), stops the workers and exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
import stat
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._app import create_app
from ._state import ServeConfig, ServerState

__all__ = ["bind", "connection_limit", "protocol", "run", "uvicorn_config"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        self.should_exit = True  # no re-raise of the signal afterwards: a drained server exits 0
        with contextlib.suppress(RuntimeError):  # runs in the main thread, which runs the server's loop
            asyncio.get_running_loop().call_soon_threadsafe(self.state.begin_drain)


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a header deadline (uvicorn has neither): past
    ``max_connections`` a new connection is closed at once, and one that has not sent a whole request head within
    ``header_timeout`` seconds of connecting (or of its last response) is closed, so half-sent requests cannot
    hold the server's descriptors."""

    max_connections = 1024
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        self.loop.call_later(self.header_timeout, self._headers_due, self.cycle)

    def _headers_due(self, armed: object) -> None:
        """No request began since the timer was armed (and none runs): the client is too slow or never sends."""
        idle = self.cycle is None or self.cycle.response_complete
        if self.cycle is armed and idle and not self.transport.is_closing():
            self.transport.close()


def connection_limit(config: ServeConfig) -> int:
    """``config.max_connections``, or what the descriptor limit allows (each connection holds one descriptor;
    64 stay for workers, the cache and the model)."""
    if config.max_connections is not None:
        return config.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(8192, (soft if soft != resource.RLIM_INFINITY else 8192) - 64))


def protocol(config: ServeConfig) -> type[H11Protocol]:
    """The HTTP protocol class with this server's limits."""
    limits = {"max_connections": connection_limit(config), "header_timeout": config.header_timeout}
    return type("GuardedH11", (_GuardedH11,), limits)


def uvicorn_config(app: Any, config: ServeConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=protocol(config),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(config.shutdown_timeout) + 10,
        lifespan="on",
    )


def _take_over_stale(uds: str) -> None:
    """Remove a stale socket file at ``uds``; refuse when a server still answers there (never take over a live one)."""
    try:
        if not stat.S_ISSOCK(os.stat(uds).st_mode):
            return  # not a socket: bind fails with "address in use", and nothing is removed
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(uds)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uds)  # nobody listens: a crashed server's leftover
        return
    except OSError:
        pass  # a socket we cannot probe (e.g. no permission, a full backlog): treat it as live
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {uds}; stop it or choose another --uds path")


def bind(host: str, port: int, uds: str | None) -> socket.socket:
    """A listening socket: a unix socket at ``uds`` (mode 0600, a stale socket file replaced, a live one refused) or
    TCP host:port."""
    if uds is not None:
        _take_over_stale(uds)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(uds)
        finally:
            os.umask(old)
        os.chmod(uds, 0o600)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, uds: str | None = None) -> int:
    sock = bind(host, port, uds)
    ours = _identity(uds) if uds is not None else None  # the socket file this server created
    where = f"unix://{uds}" if uds is not None else f"http://{host}:{sock.getsockname()[1]}"
    app = create_app(config)
    server = _Server(uvicorn_config(app, config), app.state.serve)
    if uds is None and host not in ("127.0.0.1", "::1", "localhost") and config.token is None:
        print(
            f"steadytext-async serve: warning: {host} is reachable from other hosts and no STEADYTEXT_SERVE_TOKEN "
            "is set: anyone who can connect can generate",
            file=sys.stderr,
        )
    print(f"steadytext-async serve: listening on {where}", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if uds is not None and ours is not None and _identity(uds) == ours:  # never another server's socket
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds)
    return 0 if server.started else 1
