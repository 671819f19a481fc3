"""Daemon provider: local-model generations sent to a running ``steadytext-async serve`` (``STEADYTEXT_DAEMON_URL``).

The client in this process still validates, peeks the cache, routes and builds the result and fingerprint; only the
provider events cross: the server runs its own worker pool and streams back the raw events (text pieces, token ids,
logprobs, then usage, timings and worker info) as JSON lines from a private endpoint. JSON keeps Python floats
exact, so results and fingerprints are byte-identical to in-process generation.

When the daemon cannot be reached or refuses the request (another model, another ``n_ctx``/``n_batch``, a wrong
token), generation runs in-process instead, and one warning is logged for the life of the provider. The daemon is
probed again after ``RETRY_AFTER`` seconds. If the daemon's connection breaks mid-stream, or it sends something
that is not a well-formed event, the in-process pool re-runs the request and the text already delivered is skipped
(outputs are deterministic) and checked.

Whatever listens at the URL receives every prompt (and the serve token), so it is checked before use:

- a unix socket must belong to this user (the socket file's owner, and the peer's uid through ``SO_PEERCRED``);
- the token is never sent over plain ``http://`` to a host other than loopback unless
  ``STEADYTEXT_DAEMON_INSECURE=1``;
- the daemon's output is written to the result cache (sqlite or Redis, read later by processes with no daemon)
  only when the daemon is authenticated: a unix socket of this user, or ``https://``. Over plain ``http://``
  any local process could have taken the port, so results are returned but not cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import socket
import struct
import time
import typing
import urllib.parse
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._config import Settings, redact_url
from .._env import serve_token
from .._errorwire import ErrorRecord, from_record, to_record
from .._exceptions import WorkerError
from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob
from .base import Capabilities, Provider, ProviderChunk, ProviderDone
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


def encode_error(exc: BaseException, *, retryable: bool = False) -> bytes:
    """The error line for ``exc`` (``retryable``: the daemon is stopping, the caller should run it elsewhere)."""
    body = {"error": to_record(exc, retryable=retryable).to_json()}
    return json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n"


def raise_remote_error(error: ErrorRecord) -> None:
    if error.retryable:  # the daemon is going away: generate in-process, resuming where it stopped
        raise DaemonRefused(error.message)
    raise from_record(error, origin="daemon")


_FINISH_REASONS = frozenset(typing.get_args(FinishReason))


def decode_event(line: bytes) -> ProviderChunk | ProviderDone:
    """One event of the daemon's stream; :class:`DaemonRefused` for anything that is not a well-formed event (the
    caller then generates in-process), a typed error for an error event."""
    try:
        body = json.loads(line)
        if not isinstance(body, dict):
            raise TypeError(f"not an object: {type(body).__name__}")
        if "chunk" in body:
            text, ids, tokens = body["chunk"]
            if not isinstance(text, str) or not isinstance(ids, list) or not all(type(i) is int for i in ids):
                raise TypeError("chunk is not [text, token ids, tokens]")
            parsed = [TokenLogprob.model_validate(t) for t in tokens] if tokens is not None else None
            return ProviderChunk(text, ids, parsed)
        if "done" in body:
            done = ProviderDone(**body["done"])
            if done.finish_reason not in _FINISH_REASONS:
                raise ValueError(f"unknown finish_reason {done.finish_reason!r:.40}")
            return done
        if "error" not in body:
            raise TypeError("neither a chunk, a result nor an error")
        error = ErrorRecord.from_json(body["error"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:  # ValidationError: a ValueError
        raise DaemonRefused(f"malformed daemon event ({type(exc).__name__}): {line[:80]!r}") from None
    raise_remote_error(error)
    raise AssertionError("unreachable")


def _loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _owner(path: str) -> int | None:
    """The uid owning ``path`` (a stat of a local socket file: microseconds), or None when it is gone."""
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def _socket_owner_problem(path: str) -> str | None:
    """Why the unix socket at ``path`` is not this user's daemon (None when it is): the file's owner, then the
    listening process's uid (``SO_PEERCRED``)."""
    uid = os.getuid()
    try:
        owner = os.stat(path).st_uid
    except OSError as exc:
        return f"cannot stat the daemon socket: {exc.strerror}"
    if owner != uid:
        return f"the daemon socket belongs to uid {owner}, not to this user (uid {uid})"
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:  # pragma: no cover - not Linux: the file owner is the check
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
        _, peer_uid, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
    except OSError as exc:
        return f"cannot reach the daemon socket: {exc.strerror or exc}"
    finally:
        probe.close()
    if peer_uid != uid:
        return f"the daemon is run by uid {peer_uid}, not by this user (uid {uid})"
    return None


# -- the provider ----------------------------------------------------------------------------------------------


class DaemonProvider(Provider):
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
        self.shown_url = redact_url(self.url)  # what logs show (a URL's user:password never)
        self._uds = self.url[len("unix://") :] if self.url.startswith("unix://") else None
        self._peer_checked = False
        self._token = serve_token(settings.environ)  # read once, with the client's settings
        parts = urllib.parse.urlsplit(self.url) if self._uds is None else None
        plain_remote = parts is not None and parts.scheme == "http" and not _loopback(parts.hostname)
        self._refusal = (  # decided once: a reason never to use this daemon
            "refusing to send STEADYTEXT_SERVE_TOKEN over plain http to a host other than loopback "
            "(use https://, a unix socket, or STEADYTEXT_DAEMON_INSECURE=1)"
            if plain_remote and self._token and not settings.daemon_insecure
            else None
        )
        # Authenticated daemons only: their output may be written to the persistent or shared result cache.
        self.results_cacheable = self._uds is not None or (parts is not None and parts.scheme == "https")

    def _client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = httpx.Timeout(10.0, connect=2.0, read=None)  # a queued request may wait long for a worker
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            if self._uds is not None:
                transport = httpx.AsyncHTTPTransport(uds=self._uds)
                client = httpx.AsyncClient(transport=transport, base_url="http://daemon", timeout=timeout)
            else:
                client = httpx.AsyncClient(base_url=self.url, timeout=timeout)
            client.headers.update(headers)
            self._clients[loop] = client
        return client

    def check(self, request: GenerationRequest, spec: ModelSpec | None = None) -> None:
        self.fallback.check(request)  # what needs no model; the model's own checks run where it generates

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.check(request)
        delivered: list[str] = []
        if self._refusal is not None:
            self._fall_back(self._refusal)
        elif time.monotonic() >= self._down_until:
            try:
                await self._check_peer()
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

    async def _check_peer(self) -> None:
        """A unix socket must be this user's: its owner on every request, the listening process once per period of
        use (a probe connection)."""
        if self._uds is None:
            return
        if not self._peer_checked:
            problem = await asyncio.to_thread(_socket_owner_problem, self._uds)
            self._peer_checked = problem is None
        else:
            problem = None if _owner(self._uds) == os.getuid() else "the daemon socket was replaced"
        if problem is not None:
            self._peer_checked = False
            raise DaemonRefused(problem)

    def _fall_back(self, reason: str) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        self._peer_checked = False  # the next use probes the socket's owner again
        if not self._warned:
            self._warned = True
            logger.warning("steadytext daemon %s not used (%s); generating in-process", self.shown_url, reason)
        else:
            logger.debug("steadytext daemon %s not used (%s)", self.shown_url, reason)

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

        if self._refusal is not None:
            await self.fallback.preload(spec)
            return
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
