"""Daemon provider: local-model generations sent to a running ``steadytext-async serve`` (``STEADYTEXT_DAEMON_URL``).

The client in this process still validates, peeks the cache, routes and builds the result and fingerprint; only the
provider events cross: the server runs its own worker pool and streams back the raw events (text pieces, token ids,
logprobs, then usage, timings and worker info) as JSON lines from a private endpoint. JSON keeps Python floats
exact, so results and fingerprints are byte-identical to in-process generation.

When the daemon cannot be reached or refuses the request (another model, another ``n_ctx``/``n_batch``, a wrong
token), generation runs in-process instead, and one warning is logged for the life of the provider. The daemon is
probed again after ``RETRY_AFTER`` seconds. If the daemon's connection breaks mid-stream, the in-process pool
re-runs the request and the text already delivered is skipped (outputs are deterministic) and checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._config import Settings
from .._env import serve_token
from .._exceptions import (
    ConstraintError,
    InvalidRequestError,
    ModelUnavailableError,
    SteadyTextError,
    WorkerError,
)
from .._models import GenerationRequest, ModelSpec, TokenLogprob
from .base import Capabilities, ProviderChunk, ProviderDone
from .local import LocalProvider

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DAEMON_PATH",
    "DaemonProvider",
    "DaemonRefused",
    "decode_event",
    "encode_error",
    "encode_event",
    "raise_remote_error",
]

logger = logging.getLogger("steadytext_async")

DAEMON_PATH = "/_steadytext/v1/provider-stream"  # private: not part of the OpenAI-compatible surface
RETRY_AFTER = 30.0
_ERRORS: dict[str, type[SteadyTextError]] = {
    "InvalidRequestError": InvalidRequestError,
    "ModelUnavailableError": ModelUnavailableError,
    "WorkerError": WorkerError,
}


class DaemonRefused(Exception):
    """The daemon cannot serve this request as this process would (unreachable, other model or settings)."""


# -- wire format (one JSON object per line) --------------------------------------------------------------------


def encode_event(event: ProviderChunk | ProviderDone) -> bytes:
    if isinstance(event, ProviderDone):
        body: dict[str, Any] = {"done": dataclasses.asdict(event)}
    else:
        tokens = [t.model_dump(mode="json") for t in event.tokens] if event.tokens is not None else None
        body = {"chunk": [event.text, event.token_ids, tokens]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def encode_error(exc: BaseException) -> bytes:
    partial = exc.partial_text if isinstance(exc, ConstraintError) else None
    body = {"error": {"type": type(exc).__name__, "message": str(exc), "partial_text": partial}}
    return json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n"


def raise_remote_error(error: dict[str, Any]) -> None:
    kind, message = str(error.get("type")), str(error.get("message"))
    if kind == "ShuttingDown":  # the daemon is going away: generate in-process, resuming where it stopped
        raise DaemonRefused(message)
    if kind == "ConstraintError":
        raise ConstraintError(message, partial_text=str(error.get("partial_text") or ""))
    raise _ERRORS.get(kind, WorkerError)(f"daemon: {message}")


def decode_event(line: bytes) -> ProviderChunk | ProviderDone:
    body = json.loads(line)
    if "chunk" in body:
        text, ids, tokens = body["chunk"]
        parsed = [TokenLogprob.model_validate(t) for t in tokens] if tokens is not None else None
        return ProviderChunk(text, list(ids), parsed)
    if "done" in body:
        return ProviderDone(**body["done"])
    raise_remote_error(body.get("error") or {"message": f"malformed daemon event {line[:80]!r}"})
    raise AssertionError("unreachable")


# -- the provider ----------------------------------------------------------------------------------------------


class DaemonProvider:
    """Same interface as :class:`LocalProvider`; runs requests on the daemon, else on ``fallback`` (in-process)."""

    name = "local"  # results and fingerprints are those of local generation
    capabilities = Capabilities(deterministic=True)

    def __init__(self, settings: Settings, fallback: LocalProvider) -> None:
        assert settings.daemon_url is not None
        self.settings = settings
        self.url = settings.daemon_url
        self.fallback = fallback
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._down_until = 0.0
        self._warned = False
        self.daemon_requests = 0  # requests the daemon served (observable for tests)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = httpx.Timeout(10.0, connect=2.0, read=None)  # a queued request may wait long for a worker
            headers = {"Authorization": f"Bearer {token}"} if (token := serve_token()) else {}
            if self.url.startswith("unix://"):
                transport = httpx.AsyncHTTPTransport(uds=self.url[len("unix://") :])
                client = httpx.AsyncClient(transport=transport, base_url="http://daemon", timeout=timeout)
            else:
                client = httpx.AsyncClient(base_url=self.url, timeout=timeout)
            client.headers.update(headers)
            self._clients[loop] = client
        return client

    def check(self, request: GenerationRequest) -> None:
        self.fallback.check(request)

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.check(request)
        delivered: list[str] = []
        if time.monotonic() >= self._down_until:
            try:
                async for event in self._remote(spec, request):
                    if isinstance(event, ProviderChunk):
                        delivered.append(event.text)
                    yield event
                self.daemon_requests += 1
                return
            except DaemonRefused as exc:
                self._fall_back(str(exc))
        async for event in self._resume(spec, request, "".join(delivered)):
            yield event

    async def _resume(
        self, spec: ModelSpec, request: GenerationRequest, delivered: str
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        """Run in-process; skip (and check) text the daemon already delivered before its connection broke."""
        seen = ""
        async for event in self.fallback.stream(spec, request):
            if isinstance(event, ProviderChunk) and len(seen) < len(delivered):
                seen += event.text
                if not (delivered.startswith(seen) or seen.startswith(delivered)):
                    raise WorkerError("in-process generation diverged from the text the daemon delivered")
                if len(seen) <= len(delivered):
                    continue
                event = dataclasses.replace(event, text=seen[len(delivered) :])
            yield event

    def _fall_back(self, reason: str) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        if not self._warned:
            self._warned = True
            logger.warning("steadytext daemon %s not used (%s); generating in-process", self.url, reason)
        else:
            logger.debug("steadytext daemon %s not used (%s)", self.url, reason)

    async def _remote(self, spec: ModelSpec, request: GenerationRequest) -> AsyncIterator[ProviderChunk | ProviderDone]:
        import httpx

        body = {
            "request": request.model_dump(mode="json"),
            "model_sha256": spec.sha256,
            "prompt_format": spec.prompt_format,
            "n_ctx": self.settings.n_ctx,
            "n_batch": self.settings.n_batch,
        }
        started = False
        try:
            async with self._client().stream("POST", DAEMON_PATH, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread())[:300].decode("utf-8", "replace")
                    raise DaemonRefused(f"HTTP {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if line:
                        event = decode_event(line.encode("utf-8"))
                        started = True
                        yield event
        except httpx.HTTPError as exc:
            # before any event: the daemon is not there; after: its connection broke and _resume takes over
            raise DaemonRefused(f"{type(exc).__name__}: {exc}" + (" (mid-stream)" if started else "")) from None

    async def preload(self, spec: ModelSpec) -> None:
        """Nothing to start here when the daemon is up (it owns the workers); otherwise preload in-process."""
        import httpx

        try:
            response = await self._client().get("/health")
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await self.fallback.preload(spec)

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()  # the fallback LocalProvider belongs to the client (or the engine), not to us


def local_provider_for(settings: Settings, local: LocalProvider) -> DaemonProvider | LocalProvider:
    """The provider that serves local models: the daemon when ``settings.daemon_url`` is set, else ``local``."""
    return DaemonProvider(settings, local) if settings.daemon_url else local
