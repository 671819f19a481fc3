"""What every endpoint of the server shares: its configuration, its state (the SDK client, metrics, the drain) and
reading a request's JSON body within the configured limits."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

from starlette.requests import Request

from .._client import AsyncSteadyText
from .._config import Settings
from ._engine import pool_stats
from ._errors import HTTPError
from ._metrics import Metrics

__all__ = ["ServeConfig", "ServerState", "read_json"]


@dataclasses.dataclass(frozen=True, slots=True)
class ServeConfig:
    settings: Settings
    allow_remote: bool = False
    token: str | None = None  # bearer token required on every endpoint (/health: its details)
    shutdown_timeout: float = 30.0  # in-flight requests get this long to finish before they are ended
    preload: bool = True  # start the default model's workers at startup
    allow_download: bool = False  # serve registry models that are not on this host yet (Hub downloads)
    daemon: bool = False  # enable the private endpoint STEADYTEXT_DAEMON_URL clients use
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413 before they are read
    body_timeout: float = 30.0  # seconds a request body may take to arrive (408 after)
    max_queued: int = 4096  # generations in flight (queued or running) before new ones get 429
    max_connections: int | None = None  # open connections before new ones are closed (None: from RLIMIT_NOFILE)
    header_timeout: float = 10.0  # a connection that has not sent a request's headers by then is closed


class ServerState:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.client: AsyncSteadyText | None = None
        self.metrics = Metrics(self.stats)
        self.stop = asyncio.Event()  # set when in-flight work must end (shutdown deadline passed)
        self.draining = False
        self.started = time.time()

    def stats(self) -> dict[str, Any]:
        return pool_stats(self.client) if self.client is not None else pool_stats_empty(self.config.settings)

    def begin_drain(self) -> None:
        """Stop taking new generations; end whatever still runs after ``shutdown_timeout``."""
        if self.draining:
            return
        self.draining = True
        asyncio.get_running_loop().call_later(self.config.shutdown_timeout, self.stop.set)

    @property
    def sdk(self) -> AsyncSteadyText:
        assert self.client is not None
        return self.client


def pool_stats_empty(settings: Settings) -> dict[str, Any]:
    keys = ("workers_alive", "workers_busy", "generations", "respawns", "cache_hits", "cache_misses")
    return {"workers_max": settings.workers, "threads": settings.threads, **dict.fromkeys(keys, 0)}


async def read_json(request: Request, config: ServeConfig) -> Any:
    """The request's JSON body: 413 past ``max_body_bytes`` (declared or streamed), 408 past ``body_timeout``, 400 for
    anything that is not JSON (also nesting too deep to parse or integers too long to convert)."""
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit) if declared.isdigit() else HTTPError(400, "invalid Content-Length header")
    body = bytearray()
    try:
        async with asyncio.timeout(config.body_timeout):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise HTTPError(408, f"the request body did not arrive within {config.body_timeout:g} s") from None
    if len(body) > _PARSE_ON_LOOP:  # a large document is parsed off the loop (/health stays responsive)
        return await asyncio.to_thread(_loads, bytes(body))
    return _loads(bytes(body))


_PARSE_ON_LOOP = 64 * 1024


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"the request body exceeds {limit} bytes", code="request_too_large")


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8 and int-digits errors
        raise HTTPError(400, f"the request body is not valid JSON: {str(exc)[:200]}") from None
