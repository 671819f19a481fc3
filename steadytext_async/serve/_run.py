"""Run the server: bind the socket ourselves (a unix socket gets mode 0600), then uvicorn; drain on SIGTERM/SIGINT.

On the first SIGTERM or SIGINT the server stops accepting connections and new generations, lets in-flight requests
finish for up to ``shutdown_timeout`` seconds, then ends the rest cleanly (an error event and ``[DONE]`` for
streams, 503 otherwise), stops the workers and exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from types import FrameType

import uvicorn

from ._app import ServeConfig, ServerState, create_app

__all__ = ["bind", "run"]


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


def bind(host: str, port: int, uds: str | None) -> socket.socket:
    """A listening socket: a unix socket at ``uds`` (mode 0600, a stale socket file replaced) or TCP host:port."""
    if uds is not None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(uds).st_mode):
                os.unlink(uds)
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


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, uds: str | None = None) -> int:
    sock = bind(host, port, uds)
    where = f"unix://{uds}" if uds is not None else f"http://{host}:{sock.getsockname()[1]}"
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(config.shutdown_timeout) + 10,
        lifespan="on",
    )
    server = _Server(uv_config, app.state.serve)
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
        if uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds)
    return 0 if server.started else 1
